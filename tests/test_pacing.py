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
    WINDOW_GUARD,
    WINDOW_SLACK,
    Pacer,
    PacingEvent,
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


# --- the window log: a stated policy is kept per window, not spread thin ----------

WINDOW_SPAN = (1.0 + WINDOW_SLACK) + WINDOW_GUARD  # the span of a 1 s window


def test_stated_window_spends_the_quota_at_once_then_waits_for_the_oldest() -> None:
    """q=4;w=1: the first answer leaves 3; they go at once, the fifth when the first ages."""
    pacer = Pacer()
    assert pacer.reserve(10.0) == 10.0  # alone, before anything is known
    pacer.on_quota(10.02, Quota(limit=4, remaining=3, reset=1.0, window=1.0), sent_at=10.0)
    assert slots(pacer, 10.02, 4) == pytest.approx([10.02, 10.02, 10.02, 10.0 + WINDOW_SPAN])


def test_others_usage_reported_by_the_gateway_is_logged() -> None:
    """The gateway counts more than we sent: the difference is logged as sent now."""
    pacer = Pacer()
    pacer.reserve(0.0)
    pacer.on_quota(0.02, Quota(limit=10, remaining=2, reset=1.0, window=1.0), sent_at=0.0)
    taken = slots(pacer, 0.02, 3)
    assert taken[:2] == [0.02, 0.02]
    assert taken[2] == pytest.approx(WINDOW_SPAN)


def test_fixed_window_turn_is_learned_and_the_quota_comes_back_in_one_lump() -> None:
    """Quota forgotten while young marks a fixed window; spent, it pauses until the reset
    (when that comes before the log frees a slot) and then the whole quota is free at once."""
    pacer = Pacer()
    pacer.reserve(0.3)
    pacer.on_quota(0.31, Quota(limit=4, remaining=3, reset=1.0, window=1.0), sent_at=0.3)
    assert slots(pacer, 0.31, 3) == [0.31] * 3
    # The window turns at 0.5; the log alone would wait for 0.3 + span.
    assert pacer.reserve(0.6) == pytest.approx(0.3 + WINDOW_SPAN)
    pacer.cancel(0.3 + WINDOW_SPAN)
    assert pacer.reserve(0.6) == pytest.approx(0.3 + WINDOW_SPAN)
    # Suppose that one had gone at 0.55: its answer counts only itself.
    pacer._log[-1] = 0.55
    event, _ = pacer.on_quota(0.58, Quota(4, 3, 1.0, 1.0), sent_at=0.55)
    assert pacer.lumpy
    assert event == PacingEvent(
        "pacing.window_learned", {"kind": "fixed", "limit": 4, "window_s": 1.0}
    )
    assert slots(pacer, 0.6, 3) == [0.6, 0.6, 0.6]
    # Spent; the next turn (a fractional reset) comes before the log would free a slot.
    event, pause = pacer.on_quota(0.62, Quota(limit=4, remaining=0, reset=0.88, window=1.0), 0.6)
    assert pause == pytest.approx(0.88)
    assert event is None or event.fields["reason"] == "quota_exhausted"
    assert slots(pacer, 1.5, 4) == [1.5] * 4


def test_a_reset_sooner_than_the_log_is_probed_with_one_request() -> None:
    """Spent, with the gateway saying quota is back sooner than the log frees a slot:
    one request at the reset, the rest wait for the log."""
    pacer = Pacer()
    pacer.reserve(0.0)
    pacer.on_quota(0.01, Quota(limit=2, remaining=1, reset=2.0, window=2.0), sent_at=0.0)
    assert pacer.reserve(0.01) == 0.01
    pacer.on_quota(0.03, Quota(limit=2, remaining=0, reset=1.0, window=2.0), sent_at=0.01)
    assert pacer.reserve(0.03) == pytest.approx(1.03)
    assert pacer.reserve(0.03) > 2.0


def _honest(kind: str, limit: int, window: float, sent: list[float], at: float) -> Quota:
    """What a sliding log or a fixed window gateway reports for a request admitted ``at``."""
    if kind == "sliding":
        inside = sorted(t for t in sent if at - window < t <= at)
        reset = inside[0] + window - at if len(inside) >= limit else window
    else:
        start = math.floor(at / window) * window
        inside = [t for t in sent if start <= t <= at]
        reset = start + window - at
    return Quota(limit, max(0, limit - len(inside)), math.ceil(reset), window)


@given(
    st.sampled_from(["sliding", "fixed"]),
    st.integers(1, 12),
    st.sampled_from([0.5, 1.0, 2.0, 7.0]),
    st.lists(
        st.tuples(st.floats(0, 1.5, allow_nan=False), st.floats(0, 0.004), st.booleans()),
        min_size=1,
        max_size=60,
    ),
)
def test_window_log_never_overfills_the_stated_window(
    kind: str, limit: int, window: float, steps: list[tuple[float, float, bool]]
) -> None:
    """Against an honest gateway (answers within the guard), no window of the gateway's
    ever holds more than its quota, pauses included, whatever the timing."""
    pacer = Pacer()
    now, sent, answered = 0.0, [], False
    for gap, delay, report in steps:
        now += gap
        slot = pacer.reserve(now)
        if slot is None:
            continue
        now = max(now, slot)
        sent.append(slot)
        if report or not answered:
            answered = True
            quota = _honest(kind, limit, window, sent, slot)
            _, pause = pacer.on_quota(slot + delay, quota, sent_at=slot)
            now = max(now, slot + delay + (pause or 0.0))
    for moment in sent:
        if kind == "sliding":
            assert sum(1 for t in sent if moment - window < t <= moment) <= limit
        else:
            start = math.floor(moment / window) * window
            assert sum(1 for t in sent if start <= t < start + window) <= limit


@pytest.mark.parametrize(
    ("reset", "window"),
    [(2.0, 2.0), (1.0, 1.0), (60.0, 60.0), (2.3, 2.0), (2.999, 2.0), (0.4, None), (0.0, None)],
)
def test_window_from_reset(reset: float, window: float | None) -> None:
    """A whole-second reset is the window; an epoch read finely runs up to a second over."""
    assert window_from_reset(reset) == window


@pytest.mark.anyio
async def test_a_quota_pause_releases_everyone_together() -> None:
    """A pause for a spent quota (spread=False) has no release jitter; a throttle's has,
    and it wins when both are in force."""
    clock = FakeClock()
    gate = RateGate(clock, FixedRandom(1.0), release_jitter=0.25)
    gate.pause(clock.monotonic(), 1.0, spread=False)
    assert await gate.wait_turn() == pytest.approx(1.0)
    gate.pause(clock.monotonic(), 1.0, spread=False)
    gate.pause(clock.monotonic(), 0.5)  # a throttle inside the quota pause
    assert await gate.wait_turn() == pytest.approx(1.25)
