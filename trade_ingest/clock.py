"""The one clock everything that waits asks.

Monotonic time drives waits and pauses; wall time (UTC epoch seconds) stamps
records and reads HTTP-date hints. ``FakeClock`` advances instantly and records
every sleep, so retry and pacing behaviour is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, UTC."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: the event loop's sleep, the OS's time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock for tests: ``sleep`` advances time at once and is recorded in ``sleeps``."""

    def __init__(self, start_wall: float = 1_764_000_000.0, start_monotonic: float = 1000.0):
        self._wall_offset = start_wall - start_monotonic
        self.now = start_monotonic
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self.now += seconds
        # Let other tasks run, as a real sleep would.
        await asyncio.sleep(0)
