"""Retry policy: classification, server hints and backoff, as tables and properties."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FixedRandom
from trade_ingest.policy import (
    Cause,
    GiveUp,
    Quota,
    Retry,
    RetryPolicy,
    ServerClock,
    WaitHint,
    classify_status,
    decide,
    parse_http_date,
    parse_quota,
    parse_ratelimit_reset,
    parse_retry_after,
    server_now,
    unreadable_hint,
    wait_hint,
)

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z
IMF = "Mon, 24 Nov 2025 16:00:30 GMT"  # NOW + 30
RFC850 = "Monday, 24-Nov-25 16:00:30 GMT"
ASCTIME = "Mon Nov 24 16:00:30 2025"


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (200, None),
        (204, None),
        (301, Cause.REDIRECT),
        (302, Cause.REDIRECT),
        (400, Cause.CLIENT_ERROR),
        (401, Cause.CLIENT_ERROR),
        (403, Cause.CLIENT_ERROR),
        (404, Cause.CLIENT_ERROR),
        (408, Cause.REQUEST_TIMEOUT),
        (429, Cause.RATE_LIMITED),
        (500, Cause.SERVER_ERROR),
        (502, Cause.SERVER_ERROR),
        (503, Cause.SERVER_ERROR),
        (504, Cause.SERVER_ERROR),
    ],
)
def test_classify_status(status: int, cause: Cause | None) -> None:
    """Every status class maps to the cause the retry table expects."""
    assert classify_status(status) == cause


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (IMF, 30.0),
        (RFC850, 30.0),
        (ASCTIME, 30.0),
        ("Mon, 24 Nov 2025 15:00:00 GMT", 0.0),  # in the past: no wait
        ("-5", None),
        ("soon", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        ("1e3", None),
        ("Mon, 99 Nov 2025 16:00:30 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    """Seconds and all three HTTP-date forms are read; garbage is no hint."""
    assert parse_retry_after(value, NOW) == expected


def test_three_http_date_forms_agree() -> None:
    """IMF-fixdate, RFC 850 and asctime name the same instant."""
    assert parse_http_date(IMF) == parse_http_date(RFC850) == parse_http_date(ASCTIME) == NOW + 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),  # delta seconds
        ("0", 0.0),
        (str(int(NOW) + 45), 45.0),  # epoch seconds
        (str(int(NOW) - 10), 0.0),  # an epoch in the past
        (str(int(NOW * 1000) + 5000), 5.0),  # epoch milliseconds
        ("soon", None),
        ("-1", None),
    ],
)
def test_parse_ratelimit_reset_tells_epoch_from_delta(value: str, expected: float | None) -> None:
    """Large values are epoch timestamps, small ones deltas."""
    assert parse_ratelimit_reset(value, NOW) == expected


def test_server_date_corrects_a_skewed_client_clock() -> None:
    """An HTTP-date hint is read against the server's Date, not our clock."""
    server_time = datetime.fromtimestamp(NOW, UTC)
    headers = httpx.Headers({"Date": format_datetime(server_time, usegmt=True), "Retry-After": IMF})
    client_wall = NOW + 3600  # our clock is an hour fast
    assert server_now(headers, client_wall) == NOW
    hint = wait_hint(headers, client_wall)
    assert hint == WaitHint(30.0, "retry_after", IMF)


def test_an_http_date_hint_is_read_against_the_narrowed_server_clock() -> None:
    """The Date header is truncated to the second: read against it, a wait is up to a
    second too long. The server clock narrowed by earlier answers (never ahead of the
    server's) reads it closer; it never makes a wait shorter than the truth."""
    server_time = datetime.fromtimestamp(NOW, UTC)
    headers = httpx.Headers({"Date": format_datetime(server_time, usegmt=True), "Retry-After": IMF})
    assert wait_hint(headers, NOW + 3600, NOW + 0.75) == WaitHint(29.25, "retry_after", IMF)
    # A stale lower bound (behind this Date) does not lengthen the wait either.
    assert wait_hint(headers, NOW + 3600, NOW - 5.0) == WaitHint(30.0, "retry_after", IMF)


def test_server_date_missing_falls_back_to_client_clock() -> None:
    """Without a Date header, our own clock is the reference."""
    assert server_now(httpx.Headers({"Date": "garbage"}), NOW) == NOW
    assert server_now(httpx.Headers(), NOW) == NOW


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, WaitHint(7.0, "retry_after", "7")),
        (
            {"Retry-After": "7", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"},
            WaitHint(7.0, "retry_after", "7"),
        ),
        (
            {"Retry-After": "junk", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"},
            WaitHint(20.0, "x_ratelimit_reset", "20"),
        ),
        ({"X-RateLimit-Reset": "12"}, WaitHint(12.0, "x_ratelimit_reset", "12")),
        ({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "12"}, None),
        # Milliseconds, where the gateway sends them too.
        (
            {"Retry-After": "2", "Retry-After-Ms": "1250"},
            WaitHint(1.25, "retry_after", "1250"),
        ),
        ({"x-ms-retry-after-ms": "40"}, WaitHint(0.04, "retry_after", "40")),
        ({"Retry-After": "2", "Retry-After-Ms": "soon"}, WaitHint(2.0, "retry_after", "2")),
        # Twitter's spelling; Discord's precise delta, which wins over its epoch reset.
        (
            {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(int(NOW) + 30)},
            WaitHint(30.0, "x_ratelimit_reset", str(int(NOW) + 30)),
        ),
        (
            {
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(NOW + 30.5),
                "X-RateLimit-Reset-After": "1.25",
            },
            WaitHint(1.25, "x_ratelimit_reset", "1.25"),
        ),
        ({}, None),
        ({"Retry-After": "junk"}, None),
    ],
)
def test_wait_hint(headers: dict[str, str], expected: WaitHint | None) -> None:
    """Retry-After wins; X-RateLimit-Reset counts only when the quota is spent."""
    assert wait_hint(httpx.Headers(headers), NOW) == expected


def test_unreadable_hint_is_reported() -> None:
    """A Retry-After that cannot be read is surfaced for the audit log."""
    assert unreadable_hint(httpx.Headers({"Retry-After": "later"})) == "later"
    assert unreadable_hint(httpx.Headers({"Retry-After": "3"})) is None
    assert unreadable_hint(httpx.Headers()) is None


POLICY = RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=8.0, max_wait=60.0)
HALF = FixedRandom(0.5)


@pytest.mark.parametrize(
    ("attempt", "cause", "status", "hint", "expected"),
    [
        (
            1,
            Cause.RATE_LIMITED,
            429,
            WaitHint(2.0, "retry_after", "2"),
            Retry(2.0, "retry_after", True, "2"),
        ),
        (1, Cause.RATE_LIMITED, 429, None, Retry(0.75, "backoff", True)),
        (2, Cause.SERVER_ERROR, 503, None, Retry(0.5, "backoff", False)),
        (3, Cause.SERVER_ERROR, 500, None, Retry(1.0, "backoff", False)),
        (
            1,
            Cause.SERVER_ERROR,
            503,
            WaitHint(5.0, "retry_after", "5"),
            Retry(5.0, "retry_after", True, "5"),
        ),
        (1, Cause.TIMEOUT, None, None, Retry(0.25, "backoff", False)),
        (1, Cause.CONNECT_ERROR, None, None, Retry(0.25, "backoff", False)),
        (1, Cause.CONNECTION_CLOSED, None, None, Retry(0.25, "backoff", False)),
        (1, Cause.POOL_TIMEOUT, None, None, Retry(0.25, "backoff", False)),
        (1, Cause.INVALID_BODY, 200, None, Retry(0.25, "backoff", False)),
        (1, Cause.REQUEST_TIMEOUT, 408, None, Retry(0.25, "backoff", False)),
        (1, Cause.CLIENT_ERROR, 404, None, GiveUp("http_404", "HTTP 404: not retried")),
        (1, Cause.CLIENT_ERROR, 401, None, GiveUp("http_401", "HTTP 401: not retried")),
        (1, Cause.REDIRECT, 302, None, GiveUp("http_302", "HTTP 302: redirects are not followed")),
        (
            1,
            Cause.BODY_TOO_LARGE,
            200,
            None,
            GiveUp("body_too_large", "body_too_large: not retried"),
        ),
        (
            4,
            Cause.SERVER_ERROR,
            503,
            None,
            GiveUp("retries_exhausted", "4 attempts, last: HTTP 503"),
        ),
        (4, Cause.TIMEOUT, None, None, GiveUp("retries_exhausted", "4 attempts, last: timeout")),
    ],
)
def test_decide_table(
    attempt: int, cause: Cause, status: int | None, hint: WaitHint | None, expected: object
) -> None:
    """Each status class and hint gets the decision the issue describes."""
    assert (
        decide(POLICY, attempt=attempt, cause=cause, status=status, hint=hint, rng=HALF) == expected
    )


@pytest.mark.parametrize(
    ("streak", "hint", "expected"),
    [
        (1, WaitHint(0.0, "retry_after", "0"), Retry(0.0, "retry_after", True, "0")),
        # Nothing got through since the last 429: at least our own wait for the row so far.
        (2, WaitHint(0.0, "retry_after", "0"), Retry(0.75, "backoff", True, "0")),
        (3, WaitHint(0.001, "retry_after", "1"), Retry(1.5, "backoff", True, "1")),
        (3, WaitHint(2.0, "retry_after", "2"), Retry(2.0, "retry_after", True, "2")),
    ],
)
def test_a_short_hint_again_and_again_is_not_taken(
    streak: int, hint: WaitHint, expected: Retry
) -> None:
    """``Retry-After: 0`` is honoured once; 429s in a row wait at least the backoff."""
    decision = decide(
        POLICY,
        attempt=1,
        cause=Cause.RATE_LIMITED,
        status=429,
        hint=hint,
        rng=HALF,
        throttle_streak=streak,
    )
    assert decision == expected


def test_hint_over_max_wait_defers_instead_of_shortening() -> None:
    """A server hint longer than max_wait is not cut short: the trade is deferred."""
    decision = decide(
        POLICY,
        attempt=1,
        cause=Cause.RATE_LIMITED,
        status=429,
        hint=WaitHint(3600.0, "retry_after", "3600"),
        rng=HALF,
    )
    assert isinstance(decision, GiveUp)
    assert decision.reason == "deferred"
    assert "3600s" in decision.detail


@given(st.text(max_size=60), st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_retry_after_parser_never_raises_nor_goes_negative(value: str, now: float) -> None:
    """Arbitrary header text gives a non-negative finite delay or no hint."""
    delay = parse_retry_after(value, now)
    assert delay is None or 0.0 <= delay < float("inf")
    reset = parse_ratelimit_reset(value, now)
    assert reset is None or 0.0 <= reset < float("inf")


@given(
    st.dictionaries(
        st.sampled_from(["retry-after", "x-ratelimit-reset", "x-ratelimit-remaining", "date"]),
        st.text(max_size=40),
    ),
    st.integers(1, 20),
    st.sampled_from(list(Cause)),
    st.integers(0, 2**32),
)
def test_decisions_stay_within_bounds(
    headers: dict[str, str], attempt: int, cause: Cause, seed: int
) -> None:
    """Whatever the server sends, a retry waits 0..max_wait and attempts respect the ceiling."""
    safe = {k: v for k, v in headers.items() if v.isprintable() and v.isascii()}
    hint = wait_hint(httpx.Headers(safe), NOW)
    decision = decide(
        POLICY, attempt=attempt, cause=cause, status=429, hint=hint, rng=random.Random(seed)
    )
    if isinstance(decision, Retry):
        assert 0.0 <= decision.delay <= POLICY.max_wait
        assert attempt < POLICY.max_attempts
    else:
        assert decision.reason


@given(st.integers(1, 200), st.integers(0, 2**32))
def test_backoff_stays_in_bounds(retry_number: int, seed: int) -> None:
    """Full jitter: 0 <= wait <= min(backoff_max, base * 2**(n-1))."""
    wait = POLICY.backoff(retry_number, random.Random(seed))
    ceiling = min(POLICY.backoff_max, POLICY.backoff_base * 2 ** min(retry_number - 1, 62))
    assert 0.0 <= wait <= ceiling


def _date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC), usegmt=True)


def test_server_clock_narrows_to_the_true_offset() -> None:
    """Dates stamped on either side of a second's turn pin the offset down; one response
    alone only bounds it within a second (read at its low end: never later than true)."""
    offset = 300.25  # the server's clock is ahead by this much
    clock = ServerClock()
    assert clock.earliest(NOW) is None
    sent = NOW + 0.70  # stamped at server time NOW + 300.96: the Date says NOW + 300
    clock = clock.observe(_date(sent + offset + 0.01), sent, sent + 0.02)
    assert clock.earliest(NOW) == pytest.approx(NOW + offset - 0.97, abs=1e-6)
    sent = NOW + 0.76  # stamped at server time NOW + 301.02: the Date says NOW + 301
    clock = clock.observe(_date(sent + offset + 0.01), sent, sent + 0.02)
    assert clock.low == pytest.approx(offset - 0.03, abs=1e-6)
    assert clock.high == pytest.approx(offset + 0.05, abs=1e-6)


def test_server_clock_starts_again_when_a_clock_is_set() -> None:
    """Bounds that no longer meet mean a clock was set: the latest response wins."""
    clock = ServerClock().observe(_date(NOW), NOW, NOW + 0.01)
    clock = clock.observe(_date(NOW + 3600), NOW + 1, NOW + 1.01)
    assert clock.low == pytest.approx(3600 - 1.01, abs=1e-6)
    assert ServerClock().observe("garbage", NOW, NOW) == ServerClock()


@pytest.mark.parametrize(
    ("headers", "quota"),
    [
        # Draft 08 and later: the state names its policy.
        ({"RateLimit-Policy": '"default";q=40;w=2', "RateLimit": '"default";r=3;t=1'},
         Quota(40, 3, 1.0, 2.0)),
        # Two policies: the one nearest to running out governs, with its own quota and window.
        ({"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
          "RateLimit": '"burst";r=50;t=30, "daily";r=999;t=5000'},
         Quota(100, 50, 30.0, 60.0)),
        ({"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
          "RateLimit": '"burst";r=50;t=30, "daily";r=20;t=5000'},
         Quota(1000, 20, 5000.0, 86400.0)),
        # Of two spent, the later reset.
        ({"RateLimit-Policy": 'burst;q=10;w=1, hour;q=500;w=3600',
          "RateLimit": 'burst;r=0;t=1, hour;r=0;t=1800'},
         Quota(500, 0, 1800.0, 3600.0)),
        # Names that match no policy: the lowest rate's policy.
        ({"RateLimit-Policy": 'a;q=100;w=60, b;q=1000;w=86400', "RateLimit": 'c;r=3;t=1'},
         Quota(1000, 3, 1.0, 86400.0)),
        # Draft 07: one policy's members, its policy by quota.
        ({"RateLimit": "limit=10, remaining=5, reset=1", "RateLimit-Policy": "10;w=1, 50;w=60"},
         Quota(10, 5, 1.0, 1.0)),
        ({"RateLimit": "limit=100, remaining=50, reset=30"}, Quota(100, 50, 30.0, None)),
        # Early drafts: separate fields, policies after the limit in force.
        ({"RateLimit-Limit": "10, 10;w=1, 50;w=60", "RateLimit-Remaining": "9",
          "RateLimit-Reset": "1"},
         Quota(10, 9, 1.0, 1.0)),
        ({"RateLimit-Limit": "50", "RateLimit-Remaining": "9", "RateLimit-Reset": "1"},
         Quota(50, 9, 1.0, None)),
        ({"RateLimit-Policy": '"default";q=40;w=2'}, Quota(40, None, None, 2.0)),
        # X-RateLimit-* in Twitter's spelling, and Discord's delta beside its epoch reset.
        ({"X-Rate-Limit-Limit": "900", "X-Rate-Limit-Remaining": "899",
          "X-Rate-Limit-Reset": str(int(NOW) + 60)},
         Quota(900, 899, 60.0, None, reset_error=1.0, reset_at=int(NOW) + 60)),
        # Epoch milliseconds name their turn in seconds.
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW * 1000) + 2500)},
         Quota(None, 0, pytest.approx(2.5), None, reset_error=1.0,
               reset_at=pytest.approx(int(NOW * 1000) / 1000 + 2.5))),
        ({"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
          "X-RateLimit-Reset": str(NOW + 30.5), "X-RateLimit-Reset-After": "1.25"},
         Quota(5, 0, 1.25, None)),
        # Nothing readable is no quota at all (the rate is then learned from 429s).
        ({"X-RateLimit-Reset": "soon", "RateLimit-Remaining": "many"}, None),
    ],
)  # fmt: skip
def test_quota_fields(headers: dict[str, str], quota: Quota | None) -> None:
    """Every IETF draft's form (with several policies, one coherent policy and its
    state), and the X-RateLimit-* spellings beside the common one."""
    assert parse_quota(httpx.Headers(headers), NOW) == quota


def test_epoch_reset_read_against_the_server_clock() -> None:
    """An epoch reset is read against the tracked clock when given, else the Date."""
    headers = httpx.Headers(
        {"Date": _date(NOW), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 2)}
    )
    # The Date is truncated to the second: the reset may be overstated by up to one.
    turn = int(NOW) + 2
    assert parse_quota(headers, NOW + 5) == Quota(None, 0, 2.0, None, 1.0, turn)
    assert parse_quota(headers, NOW + 5, server_time=NOW + 0.6, server_time_error=0.02) == Quota(
        None, 0, pytest.approx(1.4), None, reset_error=0.02, reset_at=turn
    )
    delta = httpx.Headers({"Date": _date(NOW), "X-RateLimit-Reset": "2"})
    assert parse_quota(delta, NOW + 5) == Quota(None, None, 2.0, None)


@given(
    st.floats(-1e5, 1e5, allow_nan=False),
    st.lists(
        st.tuples(st.floats(0, 1e4, allow_nan=False), st.floats(0, 2, allow_nan=False)),
        min_size=1,
        max_size=30,
    ),
)
def test_server_clock_bounds_always_hold_the_true_offset(
    offset: float, exchanges: list[tuple[float, float]]
) -> None:
    """With a fixed true offset, the bounds always contain it and the earliest reading
    is never later than the server's clock."""
    clock = ServerClock()
    for sent, round_trip in exchanges:
        sent_wall = NOW + sent
        clock = clock.observe(
            _date(sent_wall + round_trip / 2 + offset), sent_wall, sent_wall + round_trip
        )
    assert clock.low - 1e-6 <= offset <= clock.high + 1e-6
    earliest = clock.earliest(NOW)
    assert earliest is not None
    assert earliest <= NOW + offset + 1e-6


@pytest.mark.parametrize(
    ("elapsed", "delay", "answered_well", "over"),
    [
        (1.0, 1.0, 0, True),  # its time has come
        (0.9, 1.0, 0, False),
        (0.5, 4.0, 4, True),  # the base has passed and four others came back well
        (0.5, 4.0, 3, False),
        (0.4, 4.0, 100, False),  # never sooner than the first retry's base
        (0.2, 0.2, 0, True),  # a delay under the base is kept as it is
    ],
)
def test_a_trades_own_backoff_ends_early_once_others_are_answered_well(
    elapsed: float, delay: float, answered_well: int, over: bool
) -> None:
    assert RetryPolicy(backoff_base=0.5).backoff_over(elapsed, delay, answered_well) is over
