"""The batch-wide gate, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import math
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
        assert paused_until - 1e-6 <= now + delay <= paused_until + jitter + 1e-6
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


# --- the pacer ------------------------------------------------------------------

from trade_ingest.pacing import (  # noqa: E402
    HEADER_MARGIN,
    Pacer,
    RetryBudget,
    parse_duration,
    parse_rate,
    window_from_reset,
)
from trade_ingest.policy import Quota  # noqa: E402


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("30/min", 0.5), ("5/s", 5.0), ("1/5s", 0.2), ("400/1m", 400 / 60), ("3600/hour", 1.0),
     ("90/1m30s", 1.0)],
)  # fmt: skip
def test_parse_rate(text: str, per_second: float) -> None:
    """Documented limits are read in the forms gateways publish them."""
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "text", ["", "30", "/min", "0/min", "-1/s", "5/0s", "x/min", "5/fortnight"]
)
def test_parse_rate_rejects(text: str) -> None:
    """Anything else is refused with a ValueError."""
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("45m", 2700.0), ("90s", 90.0), ("1h30m", 5400.0), ("2 hours", 7200.0),
                          ("120", 120.0), ("500ms", 0.5)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    """Deadlines read as a person writes them."""
    assert parse_duration(text) == seconds


def slots(pacer: Pacer, now: float, count: int) -> list[float]:
    taken = [pacer.reserve(now) for _ in range(count)]
    assert all(slot is not None for slot in taken)
    return [float(slot) for slot in taken if slot is not None]


def test_configured_rate_spaces_every_request() -> None:
    """--rate-limit 30/min: slots 2s apart (a hair more), from the very first request."""
    pacer = Pacer(parse_rate("30/min"))
    taken = slots(pacer, 100.0, 4)
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert taken[0] == 100.0
    assert all(gap == pytest.approx(2.0 / 0.98) for gap in gaps)


def test_only_one_request_until_the_first_answer() -> None:
    """With nothing known, the first request goes alone; the rest wait for its answer."""
    pacer = Pacer()
    assert pacer.reserve(0.0) == 0.0
    assert pacer.reserve(0.0) is None
    pacer.on_response()
    assert pacer.reserve(0.01) == 0.01


@pytest.mark.parametrize(
    ("quota", "rate"),
    [
        (Quota(limit=100, remaining=50, reset=30.0, window=60.0), 100 / 60 * HEADER_MARGIN),
        (Quota(limit=40, remaining=39, reset=2.0, window=None), 20 * HEADER_MARGIN),
        (Quota(limit=None, remaining=10, reset=5.0, window=None), 2 * HEADER_MARGIN),
    ],
)
def test_rate_from_headers(quota: Quota, rate: float) -> None:
    """limit / window when the policy is known (or the reset suggests it); else remaining / reset."""
    pacer = Pacer()
    event, pause = pacer.on_quota(0.0, quota)
    assert pause is None
    assert pacer.rate == pytest.approx(rate)
    assert event is not None
    assert event.name == "pacing.rate_learned"


def test_spent_quota_pauses_until_reset() -> None:
    """remaining 0 with nothing else known: pause until the reset."""
    pacer = Pacer()
    _, pause = pacer.on_quota(0.0, Quota(limit=None, remaining=0, reset=7.0))
    assert pause == 7.0


def test_configured_rate_caps_headers() -> None:
    """A documented limit lower than the headers' wins."""
    pacer = Pacer(1.0)
    pacer.on_quota(0.0, Quota(limit=100, remaining=100, reset=1.0, window=1.0))
    assert pacer.rate == pytest.approx(0.98)


@given(
    st.integers(1, 10_000),
    st.floats(0.1, 3600, allow_nan=False),
    st.integers(0, 10_000),
    st.floats(0, 3600, allow_nan=False),
    st.integers(0, 16),
    st.integers(2, 50),
)
def test_send_rate_never_exceeds_what_headers_allow(
    limit: int, window: float, remaining: int, reset: float, in_flight: int, count: int
) -> None:
    """Slots never outrun the quota: what remains (beyond requests in flight) now, then
    at most limit per window."""
    pacer = Pacer()
    pacer.in_flight = in_flight
    pacer.on_quota(0.0, Quota(limit=limit, remaining=remaining, reset=reset, window=window))
    taken = slots(pacer, 0.0, count)
    spare = max(0, remaining - in_flight)
    for index, slot in enumerate(taken):
        allowed = spare + 1 + math.floor(slot * limit / window + 1e-9)
        assert index + 1 <= max(allowed, 1)


def test_learns_rate_between_two_throttles() -> None:
    """No headers: the rate is what got through from one throttle's end to the next's."""
    pacer = Pacer()
    pacer.on_response()
    assert pacer.on_throttled(1.0, sent_at=0.9, pause=1.0) is None  # first: nothing to compare
    for n in range(40):
        pacer.on_success(2.0 + n * 0.01, sent_at=2.0 + n * 0.01)
    event = pacer.on_throttled(2.5, sent_at=2.45, pause=1.5)  # ends at 4.0: 40 in 2s
    assert event is not None
    assert event.name == "pacing.rate_learned"
    assert pacer.rate == pytest.approx(20 * 0.97)


def test_in_flight_429s_of_one_throttle_count_once() -> None:
    """429s for requests sent before the first 429 came back change nothing more."""
    pacer = Pacer()
    pacer.learned_rate, pacer.ceiling = 10.0, 10.0
    pacer.on_throttled(5.0, sent_at=4.9)
    cut = pacer.rate
    assert cut == pytest.approx(8.5)
    assert pacer.on_throttled(5.01, sent_at=4.95) is None
    assert pacer.rate == cut


def test_recovers_then_probes_upwards() -> None:
    """After a cut the rate climbs back to just under the ceiling, then above it slowly."""
    pacer = Pacer()
    pacer.learned_rate, pacer.ceiling = 10.0, 10.0
    pacer.on_throttled(0.0, sent_at=-0.1)
    for n in range(1, 31):
        pacer.on_success(n * 0.1, sent_at=n * 0.1)
    assert pacer.rate == pytest.approx(9.7)
    for n in range(31, 61):
        pacer.on_success(n * 0.1, sent_at=n * 0.1)
    assert 9.7 < (pacer.rate or 0) < 11.0


def test_retry_budget() -> None:
    """minimum + ratio x first attempts retries, no more."""
    budget = RetryBudget(0.2, 2)
    budget.first_attempts = 10
    allowed = 0
    while budget.allows():
        budget.retries += 1
        allowed += 1
    assert allowed == 4


@pytest.mark.parametrize(
    ("reset", "window"),
    [(2.0, 2.0), (1.0, 1.0), (60.0, 60.0), (2.3, 2.0), (2.999, 2.0), (0.4, None), (0.0, None)],
)
def test_window_from_reset(reset: float, window: float | None) -> None:
    """A whole-second reset is the window; an epoch read finely runs up to a second over."""
    assert window_from_reset(reset) == window
