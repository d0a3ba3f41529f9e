#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, firmware (gcc) and
# integration tests against a real Mosquitto that the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
