#!/usr/bin/env python3
"""Drydown forecast accuracy over the known-answer grid of tests/unit/drydown_cases.py, with and without the clock.

Run on demand (not part of the test suite; tests/unit/test_drydown_accuracy.py
asserts the thresholds on the same grid, with the clock)::

    .venv/bin/python benchmarks/drydown_accuracy.py          # markdown tables
    .venv/bin/python benchmarks/drydown_accuracy.py --json   # the same figures as JSON

The grid: sand, loam and clay; winter, spring and summer at 52°N (FAO-56 day
lengths of 7.5, 11.9 and 16.5 h); reading noise of SD 0, 0.5 and 1 % VWC; a
morning and an evening watering; a forecast at each true horizon from 2 to
120 h that leaves at least 12 h of drydown before it. Each case is forecast
twice: on the season's drying clock (``DryingClock(52.0, 0.0)``, what the
watch does) and in wall time (no clock), side by side, so that the tables
show what the clock buys. For each group and horizon band they give the
median of |error| / true horizon, the share of cases whose range holds the
truth (coverage), and the count. A case without an estimate counts as an
infinite error, not covered.
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
AXES = ("clock", "wall")  # forecast on the drying clock, forecast in wall time


def _as_dict(f: Figures) -> dict[str, Any]:
    return {
        "count": f.count,
        "median_relative_error": None if math.isnan(f.median_relative_error) else f.median_relative_error,
        "coverage": None if math.isnan(f.coverage) else f.coverage,
        "no_estimate": f.no_estimate,
        "reached": f.reached,
    }


def table(label: str, rows: Sequence[tuple[str, Sequence[Outcome], Sequence[Outcome]]]) -> list[str]:
    """One markdown row per group value and horizon band: the clock's figures, then wall time's."""
    lines = [
        f"| {label} | horizon | median \\|err\\| / horizon, clock | coverage, clock | "
        "median \\|err\\| / horizon, no clock | coverage, no clock | n | no estimate | called reached |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for value, on_clock, in_wall_time in rows:
        for col, keep in COLUMNS:
            c = figures([o for o in on_clock if keep(o)])
            w = figures([o for o in in_wall_time if keep(o)])
            if not c.count:
                continue
            bold = "**" if col == "> 24 h" else ""
            lines.append(
                f"| {value} | {bold}{col}{bold} | {bold}{c.median_relative_error:.3f}{bold} | "
                f"{bold}{c.coverage:.1%}{bold} | {w.median_relative_error:.3f} | {w.coverage:.1%} | {c.count} | "
                f"{c.no_estimate} / {w.no_estimate} | {c.reached} / {w.reached} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    args = parser.parse_args(argv)

    grids: dict[str, list[Outcome]] = {}
    seconds: dict[str, float] = {}
    for axis in AXES:
        started = time.perf_counter()
        grids[axis] = outcomes(with_clock=axis == "clock")
        seconds[axis] = time.perf_counter() - started

    if args.json:
        out: dict[str, Any] = {"cases": len(grids["clock"]), "seconds": {a: round(s, 2) for a, s in seconds.items()}}
        for axis, grid in grids.items():
            out[axis] = {
                "overall": {col: _as_dict(figures([o for o in grid if keep(o)])) for col, keep in COLUMNS},
                "groups": {
                    name: {
                        str(value): {
                            col: _as_dict(figures([o for o in grid if key(o) == value and keep(o)]))
                            for col, keep in COLUMNS
                        }
                        for value in sorted({key(o) for o in grid}, key=str)
                    }
                    for name, key in GROUPS
                },
            }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0

    on_clock, in_wall_time = grids["clock"], grids["wall"]
    print(
        f"Drydown forecast accuracy: {len(on_clock)} forecasts on the drying clock in {seconds['clock']:.1f} s, "
        f"the same in wall time in {seconds['wall']:.1f} s. No estimate and called reached: clock / no clock.\n"
    )
    print("## Overall\n")
    print("\n".join(table("cases", [("all", on_clock, in_wall_time)])))
    for axis, grid in grids.items():
        long = figures([o for o in grid if o.true_hours > 24.0])
        print(
            f"\nOver 24 h, {'on the drying clock' if axis == 'clock' else 'in wall time'}: median |err|/h "
            f"{long.median_relative_error:.3f} (threshold 0.15), coverage {long.coverage:.1%} (threshold 80 %), "
            f"{long.no_estimate} without an estimate, {long.reached} called reached."
        )
    for name, key in GROUPS:
        print(f"\n## By {name}\n")
        values = sorted({key(o) for o in on_clock}, key=str)
        rows = [
            (str(v), [o for o in on_clock if key(o) == v], [o for o in in_wall_time if key(o) == v]) for v in values
        ]
        print("\n".join(table(name, rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
