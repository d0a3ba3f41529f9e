"""The watering rota: who is on duty on which day, with swaps. Pure.

The rota is weekly (``[commons.rota]`` in garden.toml: ``monday = ["ana"]``).
A swap hands one person's duty on one date to another; swaps are applied in
the order they were made, so a later swap can hand a duty on again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Swap:
    day: dt.date
    giver: str
    taker: str


@dataclass(frozen=True, slots=True)
class Rota:
    weekly: Mapping[str, tuple[str, ...]]  # weekday name -> names

    @property
    def empty(self) -> bool:
        return not any(self.weekly.values())

    def names(self) -> set[str]:
        return {n for names in self.weekly.values() for n in names}


def on_duty(rota: Rota, swaps: Sequence[Swap], day: dt.date) -> tuple[str, ...]:
    """Who is on duty on ``day``, after the swaps for that day (in order)."""
    names = list(rota.weekly.get(WEEKDAYS[day.weekday()], ()))
    for swap in swaps:
        if swap.day != day or swap.giver not in names:
            continue
        names = [swap.taker if n == swap.giver else n for n in names]
        names = list(dict.fromkeys(names))  # a taker already on duty is on duty once
    return tuple(names)


def week(rota: Rota, swaps: Sequence[Swap], first: dt.date, days: int = 7) -> list[tuple[dt.date, tuple[str, ...]]]:
    return [(d, on_duty(rota, swaps, d)) for d in (first + dt.timedelta(days=i) for i in range(days))]


def check_swap(rota: Rota, swaps: Sequence[Swap], swap: Swap) -> str | None:
    """Why ``swap`` cannot be made (a sentence), or None when it can."""
    if swap.giver == swap.taker:
        return "a swap needs two people"
    duty = on_duty(rota, swaps, swap.day)
    if swap.giver not in duty:
        who = ", ".join(duty) or "nobody"
        return f"{swap.giver} is not on duty on {swap.day:%a %d %b} (on duty: {who})"
    return None
