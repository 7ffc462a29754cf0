"""The batch-wide rate gate: one 429 holds every worker, not just the one that got it.

``RateGate`` keeps the time (monotonic) until which nobody may send. A worker
asks ``wait_needed`` before each request and waits at the gate; the decision
functions take ``now`` and an ``rng`` so they are tested without sleeping.
"""

from __future__ import annotations

import random

from trade_ingest.clock import Clock


def release_delay(now: float, paused_until: float, jitter: float, rng: random.Random) -> float:
    """How long a worker waits at the gate: to the end of the pause, plus a little spread.

    The spread (``uniform(0, jitter)``) only applies to a worker that actually
    had to wait, so that workers released together do not stampede back.
    """
    if now >= paused_until:
        return 0.0
    return paused_until - now + rng.uniform(0.0, jitter)


class RateGate:
    """Shared by all workers of a batch; the only place a pause is kept."""

    def __init__(self, clock: Clock, rng: random.Random, release_jitter: float) -> None:
        self._clock = clock
        self._rng = rng
        self._jitter = release_jitter
        self.paused_until = float("-inf")
        self.paused_seconds = 0.0
        self.pauses = 0

    def wait_needed(self, now: float) -> float:
        return max(0.0, self.paused_until - now)

    def pause(self, now: float, delay: float) -> bool:
        """Hold every worker until ``now + delay``; True when that extends the pause."""
        until = now + delay
        if until <= self.paused_until:
            return False
        if now >= self.paused_until:
            self.pauses += 1
        self.paused_seconds += until - max(now, self.paused_until)
        self.paused_until = until
        return True

    async def wait_turn(self) -> float:
        """Wait until no pause is in force; returns the seconds waited."""
        waited = 0.0
        while True:
            delay = release_delay(
                self._clock.monotonic(), self.paused_until, self._jitter, self._rng
            )
            if delay <= 0.0:
                return waited
            await self._clock.sleep(delay)
            waited += delay
