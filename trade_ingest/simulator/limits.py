"""Rate limiters of the simulated gateway: pure, given ``now`` (monotonic seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's answer to one request, and what the headers should say."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the quota is (at least partly) restored


class RateLimiter(Protocol):
    def admit(self, now: float) -> Admission: ...


class FixedWindowLimiter:
    """``limit`` requests per window; windows start at multiples of ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or not window > 0:
            raise ValueError("a fixed window needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._index = -1
        self._used = 0

    def admit(self, now: float) -> Admission:
        index = math.floor(now / self.window)
        if index != self._index:
            self._index, self._used = index, 0
        reset_after = (index + 1) * self.window - now
        if self._used >= self.limit:
            return Admission(False, self.limit, 0, reset_after)
        self._used += 1
        return Admission(True, self.limit, self.limit - self._used, reset_after)
