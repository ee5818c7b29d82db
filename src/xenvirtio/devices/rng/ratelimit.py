"""A token bucket over bytes, with the clock passed in (``now``, seconds). Pure.

``rate`` bytes are added per second up to ``burst``; the bucket starts full. Whatever
sequence of ``take`` calls is made, the bytes granted in any interval of ``t`` seconds
from the first call never exceed ``rate * t + burst``. Arithmetic is exact (fractions),
so that bound holds to the byte, not to a float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` bytes per second on average, at most ``burst`` bytes at once."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a positive number of bytes per second")
        if self.burst < 1:
            raise ValueError("burst must be at least one byte")


class TokenBucket:
    """Tokens are bytes. Time never runs backwards here: an earlier ``now`` than the last
    one seen adds nothing."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._rate = Fraction(limit.rate)
        self._burst = Fraction(limit.burst)
        self._tokens = Fraction(limit.burst)
        self._stamp = Fraction(now)

    def _refill(self, now: float) -> None:
        t = Fraction(now)
        if t > self._stamp:
            self._tokens = min(self._burst, self._tokens + (t - self._stamp) * self._rate)
            self._stamp = t

    def available(self, now: float) -> int:
        """Whole bytes that may be taken at ``now``."""
        self._refill(now)
        return math.floor(self._tokens)

    def take(self, want: int, now: float, minimum: int = 1) -> int:
        """Grant up to ``want`` bytes, or 0 if fewer than ``minimum`` are available."""
        avail = self.available(now)
        if want <= 0 or avail < max(1, minimum):
            return 0
        grant = min(want, avail)
        self._tokens -= grant
        return grant

    def delay(self, need: int, now: float) -> float:
        """Seconds from ``now`` until ``need`` bytes (capped at ``burst``) are available,
        rounded up to the microsecond so a timer set for it never fires early."""
        self._refill(now)
        deficit = min(Fraction(need), self._burst) - self._tokens
        if deficit <= 0:
            return 0.0
        due = self._stamp + deficit / self._rate
        wait = math.ceil((due - Fraction(now)) * _US) / _US
        # The float sum ``now + wait`` may round a hair below ``due``: step up until the
        # bucket really holds ``need`` at the time a timer would fire.
        while Fraction(now + wait) < due:
            wait = math.nextafter(wait, math.inf)
        return wait
