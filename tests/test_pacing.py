"""The batch-wide gate, on a fake clock."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FixedRandom
from trade_ingest.clock import FakeClock
from trade_ingest.pacing import RateGate, release_delay


def test_release_delay_table() -> None:
    """No wait when clear; the rest of the pause plus jitter otherwise."""
    half = FixedRandom(0.5)
    assert release_delay(10.0, 5.0, 1.0, half) == 0.0
    assert release_delay(10.0, 10.0, 1.0, half) == 0.0
    assert release_delay(10.0, 12.0, 1.0, half) == 2.5
    assert release_delay(10.0, 12.0, 0.0, half) == 2.0


@given(
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 60, allow_nan=False),
    st.integers(0, 2**32),
)
def test_release_never_before_the_pause_ends(
    now: float, paused_until: float, jitter: float, seed: int
) -> None:
    """A released worker never sends before the pause is over, nor later than pause + jitter."""
    delay = release_delay(now, paused_until, jitter, random.Random(seed))
    if now < paused_until:
        assert paused_until <= now + delay <= paused_until + jitter + 1e-6
    else:
        assert delay == 0.0


def test_pause_extends_only_forward_and_counts_time() -> None:
    """A shorter pause never shortens a longer one; paused time is not double counted."""
    gate = RateGate(FakeClock(), FixedRandom(0.0), 0.0)
    assert gate.pause(100.0, 5.0)
    assert not gate.pause(101.0, 2.0)  # ends at 103 < 105
    assert gate.pause(102.0, 10.0)  # extends to 112
    assert gate.paused_seconds == pytest.approx(12.0)
    assert gate.pauses == 1
    assert gate.pause(200.0, 1.0)
    assert gate.pauses == 2
    assert gate.wait_needed(200.5) == pytest.approx(0.5)


@pytest.mark.anyio
async def test_every_worker_holds_until_the_pause_ends() -> None:
    """One pause holds all workers; none is released before it ends."""
    clock = FakeClock()
    gate = RateGate(clock, random.Random(3), release_jitter=0.2)
    gate.pause(clock.monotonic(), 2.0)
    end = gate.paused_until
    released: list[float] = []

    async def worker() -> None:
        await gate.wait_turn()
        released.append(clock.monotonic())

    await asyncio.gather(*(worker() for _ in range(8)))
    assert len(released) == 8
    assert all(moment >= end for moment in released)
