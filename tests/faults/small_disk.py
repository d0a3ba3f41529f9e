"""Run a command with a directory on a small tmpfs of its own, then check the
SQLite files it left there (the fault suite's "disk full" case).

    unshare -m python -m tests.faults.small_disk DIR SIZE REPORT -- COMMAND...

``unshare -m`` (``unshare -rm`` for a user without root) gives the command a
private mount namespace: the tmpfs is seen by it alone and is gone when it ends,
so nothing is left mounted on the machine. SIGTERM is passed on to the command.
After it ends, ``PRAGMA integrity_check`` runs on every ``*.sqlite3`` in DIR and
the results go to REPORT as JSON; the exit code is the command's.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    split = argv.index("--")
    directory, size, report = Path(argv[0]), argv[1], Path(argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)], check=True)
    child = subprocess.Popen(argv[split + 1 :])
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    rc = child.wait()
    checks = {}
    for db_file in sorted(directory.glob("*.sqlite3")):
        with sqlite3.connect(db_file) as db:
            checks[db_file.name] = str(db.execute("PRAGMA integrity_check").fetchone()[0])
    usage = shutil.disk_usage(directory)
    report.write_text(json.dumps({"integrity": checks, "used": usage.used, "total": usage.total, "rc": rc}))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
