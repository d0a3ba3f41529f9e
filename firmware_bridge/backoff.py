"""The one backoff helper: capped exponential delays with full jitter.

Pure: the caller passes the random source and does the sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of ``uniform(0, min(cap, base * 2**attempt))`` seconds.

    Full jitter keeps many bridges that lost the same broker from coming
    back in step. ``floor`` keeps a lower bound so a retry loop never spins.
    """

    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.05
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return max(self.floor, self.rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        self.attempt = 0
