"""``python -m benchmarks.soak``: see :mod:`benchmarks.soak`."""

import sys

from benchmarks.soak.soak import main

sys.exit(main())
