"""Who gets how much of an oversubscribed harvest share. Pure.

Two rules, chosen by the garden (``[commons] share_rule``):

- ``first_come``: each claim takes what it asks for, or what is left, in the
  order the hub received them.
- ``by_contribution``: claims are gathered for ``allocate_after_h``; then, if
  they ask for more than is offered, each gets a part proportional to its
  weight (1 + the claimant's contributions), never more than it asked for.
  The amounts are whole grams (or pieces); the last units left by rounding go
  to the largest remainders, ties to the earlier claim.

Either way, the sum granted never exceeds what was offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RULES = ("first_come", "by_contribution")


@dataclass(frozen=True, slots=True)
class Ask:
    claim: str  # the claim's id
    who: str
    amount: int
    weight: float = 1.0


def first_come(available: int, asked: int) -> int:
    return max(0, min(available, asked))


def by_weight(available: int, asks: Sequence[Ask]) -> dict[str, int]:
    """Water-filling: proportional to weight, capped at each ask; whole units; sum ≤ available."""
    if available <= 0:
        return {a.claim: 0 for a in asks}
    if sum(a.amount for a in asks) <= available:
        return {a.claim: a.amount for a in asks}
    granted: dict[str, float] = {}
    left = float(available)
    open_asks = [a for a in asks if a.amount > 0]

    # Claims whose proportional part exceeds what they asked are filled first;
    # what they leave is shared among the rest, until every part fits.
    def weight(a: Ask) -> float:
        return a.weight if a.weight > 0 else 1.0  # no weight counts as the least

    while open_asks:
        total_weight = sum(weight(a) for a in open_asks)
        part = {a.claim: left * weight(a) / total_weight for a in open_asks}
        capped = [a for a in open_asks if part[a.claim] >= a.amount]
        if not capped:
            granted.update(part)
            break
        for a in capped:
            granted[a.claim] = float(a.amount)
            left -= a.amount
        open_asks = [a for a in open_asks if a.claim not in granted]
    whole = {a.claim: int(granted.get(a.claim, 0.0)) for a in asks}
    spare = available - sum(whole.values())
    order = sorted(
        (a for a in asks if whole[a.claim] < a.amount),
        key=lambda a: (-(granted.get(a.claim, 0.0) - whole[a.claim]), asks.index(a)),
    )
    for a in order:
        if spare <= 0:
            break
        whole[a.claim] += 1
        spare -= 1
    return whole
