"""Rate limiters of the simulated gateway: pure, given ``now`` (monotonic seconds).

Each answers ``admit(now)`` with whether the request may pass and what the
rate-limit headers should say: ``remaining`` requests and ``reset_after``
seconds until quota comes back (for a refused request: until one more
request would pass, which is also what ``Retry-After`` says).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

LimiterKind = Literal["fixed", "sliding", "token"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's answer to one request, and what the headers should say."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float


class RateLimiter(Protocol):
    """What the server needs from a limiter: its quota, its window and ``admit``."""

    limit: int
    # The policy's window in seconds, as advertised in RateLimit-Policy (w=).
    window: float

    def admit(self, now: float) -> Admission:
        """Count one request at monotonic time ``now`` if it may pass."""


class FixedWindowLimiter:
    """``limit`` requests per window; windows start at ``origin`` plus multiples of
    ``window`` seconds (on the clock ``admit`` is given).

    ``phase``: instead, the first window ends ``phase`` of a window after the
    first request, so that two clients compared meet the same turns (on the
    clock, where a run starts decides how much of the first window it gets).
    """

    def __init__(
        self, limit: int, window: float, phase: float | None = None, origin: float = 0.0
    ) -> None:
        if limit < 1 or not window > 0:
            raise ValueError("a fixed window needs limit >= 1 and window > 0")
        if phase is not None and not 0 < phase <= 1:
            raise ValueError("a fixed window's phase is a share of it: above 0, at most 1")
        self.limit = limit
        self.window = window
        self._phase = phase
        self._origin = origin
        self._index = -1
        self._used = 0

    def admit(self, now: float) -> Admission:
        if self._phase is not None:
            self._origin, self._phase = now - (1.0 - self._phase) * self.window, None
        index = math.floor((now - self._origin) / self.window)
        if index != self._index:
            self._index, self._used = index, 0
        reset_after = self._origin + (index + 1) * self.window - now
        if self._used >= self.limit:
            return Admission(False, self.limit, 0, reset_after)
        self._used += 1
        return Admission(True, self.limit, self.limit - self._used, reset_after)


class SlidingLogLimiter:
    """At most ``limit`` requests in any ``window`` seconds (an exact log of admissions)."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or not window > 0:
            raise ValueError("a sliding window needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._log: deque[float] = deque()

    def admit(self, now: float) -> Admission:
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) >= self.limit:
            return Admission(False, self.limit, 0, log[0] + self.window - now)
        log.append(now)
        return Admission(True, self.limit, self.limit - len(log), log[0] + self.window - now)


class TokenBucketLimiter:
    """Refills ``limit / window`` tokens a second up to ``burst``; a request takes one."""

    def __init__(self, limit: int, window: float, burst: int | None = None) -> None:
        if limit < 1 or not window > 0:
            raise ValueError("a token bucket needs limit >= 1 and window > 0")
        self.rate = limit / window
        self.burst = burst or limit
        if self.burst < 1:
            raise ValueError("a token bucket needs burst >= 1")
        self.limit = self.burst
        # The time to refill from empty: how RateLimit-Policy expresses a bucket.
        self.window = self.burst / self.rate
        self._tokens = float(self.burst)
        self._last: float | None = None

    def admit(self, now: float) -> Admission:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return Admission(False, self.burst, 0, (1.0 - self._tokens) / self.rate)
        self._tokens -= 1.0
        remaining = math.floor(self._tokens)
        if remaining == 0:
            return Admission(True, self.burst, 0, (1.0 - self._tokens) / self.rate)
        return Admission(True, self.burst, remaining, (self.burst - self._tokens) / self.rate)


def make_limiter(
    kind: LimiterKind,
    limit: int,
    window: float,
    burst: int | None,
    window_phase: float | None = None,
    window_origin: float = 0.0,
) -> RateLimiter:
    """The limiter of ``kind``; ``burst`` only matters to the token bucket, ``window_phase``
    and ``window_origin`` to the fixed window."""
    if kind == "fixed":
        return FixedWindowLimiter(limit, window, window_phase, window_origin)
    if kind == "sliding":
        return SlidingLogLimiter(limit, window)
    return TokenBucketLimiter(limit, window, burst)
