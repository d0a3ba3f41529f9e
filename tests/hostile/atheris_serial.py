"""An atheris (libFuzzer) harness for the serial decoder: ``python atheris_serial.py -runs=N``.

Each input is split into chunks (its first byte picks their size), decoded, checked
with :func:`check_stream`, and followed by a valid line that must come out once
(:func:`check_recovery`). A failed check is a crash to libFuzzer, which then exits
non-zero with the input. test_serial_fuzz.py runs it for a bounded number of inputs.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import atheris

    with atheris.instrument_imports(include=["firmware_bridge"]):
        import firmware_bridge.line_protocol  # noqa: F401  (instrumented: coverage guides the inputs)

from tests.hostile.serial_noise import check_recovery, check_stream, chunked, valid_line

_LINE, _FRAME = valid_line(random.Random(3))


def one_input(data: bytes) -> None:
    step = 1 + (data[0] if data else 0) % 64
    chunks = chunked(data, list(range(step, len(data), step)))
    check_stream(chunks)
    check_recovery(chunks, [_LINE[:7], _LINE[7:]], _FRAME)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
