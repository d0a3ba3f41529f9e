#!/usr/bin/env python3
"""Drydown forecast accuracy over the known-answer grid of tests/unit/drydown_cases.py.

Run on demand (not part of the test suite; tests/unit/test_drydown_accuracy.py
asserts the thresholds on the same grid)::

    .venv/bin/python benchmarks/drydown_accuracy.py          # markdown tables
    .venv/bin/python benchmarks/drydown_accuracy.py --json   # the same figures as JSON

The grid: sand, loam and clay; winter, spring and summer; reading noise of SD
0, 0.5 and 1 % VWC; a morning and an evening watering; a forecast at each
true horizon from 2 to 120 h that leaves at least 12 h of drydown before it.
For each group and horizon band it prints the median of |error| / true
horizon, the share of cases whose range holds the truth (coverage), and the
count. A case without an estimate counts as an infinite error, not covered.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.drydown_cases import BANDS, Figures, Outcome, figures, outcomes

COLUMNS: tuple[tuple[str, Callable[[Outcome], bool]], ...] = (
    *((b, lambda o, b=b: o.band == b) for b in BANDS),
    ("> 24 h", lambda o: o.true_hours > 24.0),
    ("all", lambda o: True),
)
GROUPS: tuple[tuple[str, Callable[[Outcome], object]], ...] = (
    ("soil", lambda o: o.soil),
    ("season", lambda o: o.season),
    ("noise sd", lambda o: o.noise_sd),
)


def _as_dict(f: Figures) -> dict[str, Any]:
    return {
        "count": f.count,
        "median_relative_error": None if math.isnan(f.median_relative_error) else f.median_relative_error,
        "coverage": None if math.isnan(f.coverage) else f.coverage,
        "no_estimate": f.no_estimate,
        "reached": f.reached,
    }


def table(label: str, rows: Sequence[tuple[str, Sequence[Outcome]]]) -> list[str]:
    """One markdown row per group value and horizon band."""
    lines = [
        f"| {label} | horizon | median \\|err\\| / horizon | coverage | n | no estimate | called reached |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for value, selected in rows:
        for col, keep in COLUMNS:
            f = figures([o for o in selected if keep(o)])
            if not f.count:
                continue
            bold = "**" if col == "> 24 h" else ""
            lines.append(
                f"| {value} | {bold}{col}{bold} | {bold}{f.median_relative_error:.3f}{bold} | "
                f"{bold}{f.coverage:.1%}{bold} | {f.count} | {f.no_estimate} | {f.reached} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    grid = outcomes()
    elapsed = time.perf_counter() - started

    if args.json:
        out: dict[str, Any] = {"cases": len(grid), "seconds": round(elapsed, 2), "overall": {}, "groups": {}}
        for col, keep in COLUMNS:
            out["overall"][col] = _as_dict(figures([o for o in grid if keep(o)]))
        for name, key in GROUPS:
            out["groups"][name] = {
                str(value): {
                    col: _as_dict(figures([o for o in grid if key(o) == value and keep(o)])) for col, keep in COLUMNS
                }
                for value in sorted({key(o) for o in grid}, key=str)
            }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0

    print(f"Drydown forecast accuracy: {len(grid)} forecasts in {elapsed:.1f} s\n")
    print("## Overall\n")
    print("\n".join(table("cases", [("all", grid)])))
    long = figures([o for o in grid if o.true_hours > 24.0])
    print(
        f"\nOver 24 h: median |err|/h {long.median_relative_error:.3f} (threshold 0.15), "
        f"coverage {long.coverage:.1%} (threshold 80 %), {long.no_estimate} without an estimate, "
        f"{long.reached} called reached."
    )
    for name, key in GROUPS:
        print(f"\n## By {name}\n")
        values = sorted({key(o) for o in grid}, key=str)
        print("\n".join(table(name, [(str(v), [o for o in grid if key(o) == v]) for v in values])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
