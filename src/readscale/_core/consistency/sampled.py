"""Consistency as a number: the share of sampled reads the cache got wrong, in nines.

Meta's Polaris measures cache consistency by sampling invalidations and checking, after
a delay, that the cache agrees with the database at or past the change. readscale does
the same; this module holds the arithmetic. A cache *miss* is never stale (the next read
loads the truth); a cached value that differs from the truth is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsistencyReport:
    checked: int
    stale: int
    misses: int

    @property
    def stale_rate(self) -> float:
        return self.stale / self.checked if self.checked else 0.0

    @property
    def consistent_rate(self) -> float:
        return 1.0 - self.stale_rate

    @property
    def nines(self) -> float:
        """``-log10(stale rate)``. With no stale read this is a lower bound: the sample
        only shows the rate is below ``1 / checked``."""
        if not self.checked:
            return 0.0
        rate = self.stale_rate if self.stale else 1.0 / self.checked
        return -math.log10(rate)

    @property
    def nines_is_lower_bound(self) -> bool:
        return self.stale == 0


def sampled(u: float, rate: float) -> bool:
    """Whether an event is sampled, given ``u`` uniform in [0, 1)."""
    return u < rate
