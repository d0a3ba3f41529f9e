"""Harvest quantities: "5kg", "500 g", "12" (pieces). Pure.

Stored as whole grams or whole pieces, so that twenty claims on a share add up
to exactly what was offered: no float ever decides whether a share is used up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = ("g", "pcs")
_QTY_RE = re.compile(r"\s*([0-9]{1,9}(?:[.,][0-9]{1,6})?)\s*(kg|g|pcs|pc|x|each|bunch(?:es)?)?\s*", re.IGNORECASE)
MAX_GRAMS = 10_000_000  # 10 t: anything more is a typo
MAX_PIECES = 100_000


@dataclass(frozen=True, slots=True)
class Quantity:
    amount: int  # grams or pieces
    unit: str  # "g" or "pcs"

    def __str__(self) -> str:
        return format_amount(self.amount, self.unit)

    def to_json(self) -> dict[str, object]:
        return {"amount": self.amount, "unit": self.unit, "text": str(self)}


def parse_quantity(text: str) -> Quantity:
    """``"5kg"`` → 5000 g, ``"500 g"`` → 500 g, ``"1.5 kg"``, ``"12"`` or ``"12 pcs"`` → 12 pieces.

    Raises ValueError with a message a volunteer can act on.
    """
    m = _QTY_RE.fullmatch(text or "")
    if m is None:
        raise ValueError(f"{text[:40]!r} is not a quantity: e.g. 5kg, 500g, 1.5 kg or 12 (pieces)")
    number = float(m.group(1).replace(",", "."))
    unit = (m.group(2) or "pcs").lower()
    if unit in ("kg", "g"):
        grams = round(number * (1000 if unit == "kg" else 1))
        if not 1 <= grams <= MAX_GRAMS:
            raise ValueError(f"{text!r}: a quantity is 1 g to {MAX_GRAMS // 1000} kg")
        return Quantity(grams, "g")
    if number != int(number):
        raise ValueError(f"{text!r}: pieces are whole numbers (or give a weight: 1.5kg)")
    if not 1 <= number <= MAX_PIECES:
        raise ValueError(f"{text!r}: 1 to {MAX_PIECES} pieces")
    return Quantity(int(number), "pcs")


def format_amount(amount: int, unit: str) -> str:
    if unit == "g":
        if amount >= 1000:
            kilos, grams = divmod(amount, 1000)
            return f"{kilos}.{grams:03d}".rstrip("0").rstrip(".") + " kg"
        return f"{amount} g"
    return f"{amount} pcs" if amount != 1 else "1 pc"
