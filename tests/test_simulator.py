"""The simulated gateway: deterministic trades, the fixed window, headers and faults."""

from __future__ import annotations

import json
import socket
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bench.bench_ratelimit import failure_reasons
from tests.bench.earliest import earliest_busy
from trade_ingest.policy import parse_http_date
from trade_ingest.simulator import (
    FixedWindowLimiter,
    GatewayConfig,
    SimulatedGateway,
    SlidingLogLimiter,
    TokenBucketLimiter,
    is_unknown,
    make_trade,
    render_trade_body,
)
from trade_ingest.simulator.server import _whole_seconds as whole_seconds


def test_trade_is_deterministic_with_exact_decimals() -> None:
    """The same ID always renders the same body; numbers keep their decimal places."""
    assert render_trade_body("EEX-1") == render_trade_body("EEX-1")
    assert render_trade_body("EEX-1") != render_trade_body("EEX-2")
    trade = make_trade("EEX-1")
    body = render_trade_body("EEX-1").decode()
    assert f'"quantity":{trade["quantity"]}' in body
    assert f'"price":{trade["price"]}' in body
    assert str(trade["quantity"]).count(".") == 1 and len(str(trade["quantity"]).split(".")[1]) == 3
    assert json.loads(body)["trade_id"] == "EEX-1"


def test_trade_id_that_looks_like_json_is_escaped() -> None:
    """An ID full of quotes still gives valid JSON naming that ID."""
    tricky = 'a"b\\c'
    assert json.loads(render_trade_body(tricky))["trade_id"] == tricky


def test_unknown_share_is_deterministic() -> None:
    """UNKNOWN* is always unknown; a given share of others is, stably."""
    assert is_unknown("UNKNOWN-1", 0.0)
    share = sum(is_unknown(f"T{n}", 0.1) for n in range(5000)) / 5000
    assert 0.07 < share < 0.13
    assert not any(is_unknown(f"T{n}", 0.0) for n in range(100))


@pytest.mark.parametrize(
    ("now", "allowed", "remaining", "reset_after"),
    [(10.0, True, 2, 1.0), (10.5, True, 1, 0.5), (10.9, True, 0, 0.1), (10.95, False, 0, 0.05)],
)
def test_fixed_window_table(now: float, allowed: bool, remaining: int, reset_after: float) -> None:
    """3 per 1s window: the 4th request in the window is refused."""
    limiter = FixedWindowLimiter(3, 1.0)
    for earlier in (10.0, 10.5, 10.9, 10.95):
        if earlier >= now:
            break
        limiter.admit(earlier)
    admission = limiter.admit(now)
    assert admission.allowed is allowed
    assert admission.remaining == remaining
    assert admission.reset_after == pytest.approx(reset_after)


def test_fixed_window_resets() -> None:
    """A new window restores the full quota."""
    limiter = FixedWindowLimiter(1, 1.0)
    assert limiter.admit(5.2).allowed
    assert not limiter.admit(5.8).allowed
    assert limiter.admit(6.0).allowed


def test_fixed_window_phase_counts_from_the_first_request() -> None:
    """With a phase, the first window ends that share of a window after the first request,
    wherever the clock stands; the next ones a whole window apart."""
    limiter = FixedWindowLimiter(2, 2.0, phase=0.25)
    first = limiter.admit(7.3)
    assert first.reset_after == pytest.approx(0.5)
    assert limiter.admit(7.7).allowed
    refused = limiter.admit(7.75)
    assert not refused.allowed
    assert refused.reset_after == pytest.approx(0.05)
    assert limiter.admit(7.8).remaining == 1
    assert limiter.admit(9.79).allowed
    assert not limiter.admit(9.795).allowed
    assert limiter.admit(9.8).reset_after == pytest.approx(2.0)


@pytest.mark.parametrize("phase", [0.0, -0.5, 1.5])
def test_fixed_window_phase_is_a_share_of_the_window(phase: float) -> None:
    with pytest.raises(ValueError, match="phase"):
        FixedWindowLimiter(2, 1.0, phase=phase)
    with pytest.raises(ValueError, match="window_phase"):
        GatewayConfig(rate_limit=2, window_phase=phase)


def test_serves_trades_and_404_over_keep_alive() -> None:
    """Several requests share one connection; unknown IDs are 404."""
    with (
        SimulatedGateway.in_thread(GatewayConfig()) as gateway,
        httpx.Client(base_url=gateway.base_url) as client,
    ):
        first = client.get("/trades/EEX-1")
        assert first.status_code == 200
        assert first.content == render_trade_body("EEX-1")
        assert "date" in first.headers
        assert client.get("/trades/UNKNOWN-9").status_code == 404
        assert client.get("/other").status_code == 404
        assert client.get("/trades/a%2Fb").json()["trade_id"] == "a/b"
        stats = client.get("/_stats").json()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 2, "404": 2}
    assert stats["connections"] == 1
    assert gateway.stats.per_trade["a/b"] == 1


@pytest.mark.parametrize(
    ("retry_after", "reset_style"),
    [("seconds", "delta"), ("http-date", "epoch"), ("none", "none"), ("seconds", "ietf")],
)
def test_rate_limit_headers_in_each_style(retry_after: str, reset_style: str) -> None:
    """Past the quota: 429 with Retry-After and X-RateLimit-* in the configured style."""
    config = GatewayConfig(
        rate_limit=2,
        window=30.0,
        retry_after=retry_after,  # type: ignore[arg-type]
        limit_headers=reset_style,  # type: ignore[arg-type]
    )
    with (
        SimulatedGateway.in_thread(config) as gateway,
        httpx.Client(base_url=gateway.base_url) as client,
    ):
        responses = [client.get(f"/trades/T{n}") for n in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    limited = responses[2].headers
    if retry_after == "seconds":
        assert 1 <= int(limited["retry-after"]) <= 30
    elif retry_after == "http-date":
        server_now = parse_http_date(limited["date"])
        when = parse_http_date(limited["retry-after"])
        assert server_now is not None and when is not None
        assert 0 <= when - server_now <= 31
    else:
        assert "retry-after" not in limited
    if reset_style == "ietf":
        assert limited["ratelimit-policy"] == '"default";q=2;w=30'
        assert limited["ratelimit"].startswith('"default";r=0;t=')
        assert responses[0].headers["ratelimit"].startswith('"default";r=1;t=')
    elif reset_style == "none":
        assert "x-ratelimit-limit" not in limited
    else:
        assert limited["x-ratelimit-limit"] == "2"
        assert limited["x-ratelimit-remaining"] == "0"
        assert responses[0].headers["x-ratelimit-remaining"] == "1"
        reset = int(limited["x-ratelimit-reset"])
        assert reset > 1_000_000_000 if reset_style == "epoch" else 0 < reset <= 30


def test_errors_and_drops() -> None:
    """error_rate=1 answers 5xx; drop_rate=1 closes the connection unanswered."""
    with SimulatedGateway.in_thread(GatewayConfig(error_rate=1.0)) as gateway:
        assert httpx.get(gateway.base_url + "/trades/T1").status_code in (500, 502, 503)
    with SimulatedGateway.in_thread(GatewayConfig(drop_rate=1.0)) as gateway:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(gateway.base_url + "/trades/T1")
        assert gateway.stats.dropped == 1


def test_bad_config_is_refused() -> None:
    """Nonsense settings are a ValueError with a clear message."""
    with pytest.raises(ValueError, match="error_rate"):
        GatewayConfig(error_rate=2.0)
    with pytest.raises(ValueError, match="latency"):
        GatewayConfig(latency_ms=-1)
    with pytest.raises(ValueError, match="limiter"):
        GatewayConfig(limiter="leaky")  # type: ignore[arg-type]


def test_sliding_log_table() -> None:
    """2 per 1s in any window: the third waits for the oldest to age out."""
    limiter = SlidingLogLimiter(2, 1.0)
    assert limiter.admit(0.0).allowed
    assert limiter.admit(0.4).allowed
    refused = limiter.admit(0.9)
    assert not refused.allowed
    assert refused.reset_after == pytest.approx(0.1)
    assert limiter.admit(1.01).allowed
    assert not limiter.admit(1.2).allowed
    assert limiter.admit(1.41).allowed


def test_a_window_ending_a_whole_second_away_reads_as_that_second() -> None:
    """A sliding window's reset is ``start + window - now``; where the sum crosses a power
    of two it comes out a hair over the window, and rounded up it read a second long."""
    now = 1.7  # 1.7 + 1.0 crosses 2.0: the sum is rounded
    reset_after = SlidingLogLimiter(1, 1.0).admit(now).reset_after
    assert reset_after > 1.0
    assert whole_seconds(reset_after) == 1


def test_token_bucket_table() -> None:
    """Burst 3, 2 tokens a second: three at once, then one every half second."""
    limiter = TokenBucketLimiter(2, 1.0, burst=3)
    assert [limiter.admit(0.0).allowed for _ in range(3)] == [True, True, True]
    refused = limiter.admit(0.1)
    assert not refused.allowed
    assert refused.reset_after == pytest.approx(0.4)
    assert limiter.admit(0.5).allowed
    assert not limiter.admit(0.6).allowed
    assert limiter.window == pytest.approx(1.5)


def test_penalty_box_extends_on_knocking() -> None:
    """In penalty mode a request during Retry-After is refused and restarts the penalty."""
    now = [100.0]
    config = GatewayConfig(rate_limit=1, window=2.0, penalty=True)
    gateway = SimulatedGateway(config, clock_monotonic=lambda: now[0], clock_wall=lambda: now[0])
    assert gateway._admit(100.0)[0].allowed  # type: ignore[index]
    refused = gateway._admit(100.5)
    assert refused is not None
    assert not refused[0].allowed
    assert refused[1] == pytest.approx(2.0)  # told to wait: rounded up to whole seconds
    knocked = gateway._admit(102.0)  # the window has reset, but the penalty runs to 102.5
    assert knocked is not None
    assert not knocked[0].allowed
    assert knocked[1] == pytest.approx(2.0)  # restarted: a full window from the knock
    assert gateway.stats.penalties == 1
    assert gateway._admit(104.1)[0].allowed  # type: ignore[index]


def test_fixed_windows_turn_on_the_servers_wall_clock() -> None:
    """Without a phase, a fixed window turns where the server's wall clock (its offset
    included) passes a multiple of the window, as most gateways count, so its epoch
    reset names the turn to the second."""
    now = [10.0]
    config = GatewayConfig(rate_limit=1, window=1.0, limit_headers="epoch", clock_offset=0.2)
    gateway = SimulatedGateway(
        config, clock_monotonic=lambda: now[0], clock_wall=lambda: now[0] + 1_799_999_990.1
    )
    # The server's wall clock reads 1_800_000_000.3 at 10.0: its next second is at 10.7.
    admitted = gateway._admit(10.0)
    now[0] += 1e-4  # time passes between the admission and its headers
    assert admitted is not None
    assert admitted[0].allowed
    assert dict(gateway._limit_headers(admitted[0], 10.0))["X-RateLimit-Reset"] == "1800000001"
    assert not gateway._admit(10.69)[0].allowed  # type: ignore[index]
    assert gateway._admit(10.71)[0].allowed  # type: ignore[index]


def test_clock_offset_shows_in_date_and_epoch_reset() -> None:
    """A server clock an hour ahead says so in Date, and its epoch resets follow it."""
    config = GatewayConfig(rate_limit=5, window=10.0, limit_headers="epoch", clock_offset=3600)
    with SimulatedGateway.in_thread(config) as gateway:
        response = httpx.get(gateway.base_url + "/trades/T1")
    server_now = parse_http_date(response.headers["date"])
    assert server_now is not None
    import time

    assert 3590 < server_now - time.time() < 3610
    assert 0 < int(response.headers["x-ratelimit-reset"]) - server_now <= 11


@pytest.mark.parametrize(
    ("retry_after", "limit_headers", "expected_retry_after", "expected_reset"),
    [
        ("seconds", "delta", "1", "1"),
        # Retry-After: the wait rounded up to a second, from 08:00:00.2, then to the second.
        ("http-date", "epoch", formatdate(1_800_000_002, usegmt=True), "1800000001"),
        ("none", "none", None, None),
    ],
)
def test_fixed_window_over_http_with_exact_headers(
    retry_after: str,
    limit_headers: str,
    expected_retry_after: str | None,
    expected_reset: str | None,
) -> None:
    """5 per 0.5s on a frozen clock: the 6th is 429 with exact headers; the next window admits."""
    now = [100.2]  # the window is [100.0, 100.5): 0.3s left
    config = GatewayConfig(
        rate_limit=5,
        window=0.5,
        retry_after=retry_after,  # type: ignore[arg-type]
        limit_headers=limit_headers,  # type: ignore[arg-type]
    )
    with (
        SimulatedGateway.in_thread(
            # The wall clock turns its half-seconds where the monotonic one does.
            config,
            clock_monotonic=lambda: now[0],
            clock_wall=lambda: now[0] + 1_799_999_900.0,
        ) as gateway,
        httpx.Client(base_url=gateway.base_url) as client,
    ):
        responses = [client.get(f"/trades/T{n}") for n in range(6)]
        now[0] = 100.5
        after_reset = client.get("/trades/T6")
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    limited = responses[5]
    assert limited.reason_phrase == "Too Many Requests"
    assert limited.json() == {"error": "rate limit exceeded", "trade_id": "T5"}
    assert limited.headers["date"] == "Fri, 15 Jan 2027 08:00:00 GMT"
    assert limited.headers.get("retry-after") == expected_retry_after
    assert limited.headers.get("x-ratelimit-reset") == expected_reset
    if expected_reset is not None:
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == list("432100")
    assert after_reset.status_code == 200
    assert after_reset.headers.get("x-ratelimit-remaining", "4") == "4"
    assert gateway.stats.rate_limited_ids == ["T5"]


def test_bad_requests_are_answered_not_crashed_on() -> None:
    """Garbage gets 400, other methods 405 with Allow, extra path segments 404."""
    with SimulatedGateway.in_thread(GatewayConfig()) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=2) as raw:
            raw.sendall(b"\x00\x01 not http\r\n\r\n")
            answer = b""
            while chunk := raw.recv(4096):  # the server closes after answering
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        with httpx.Client(base_url=gateway.base_url) as client:
            posted = client.post("/trades/T1", content=b"{}")
            assert posted.status_code == 405
            assert posted.headers["allow"] == "GET"
            assert client.get("/trades/a/b").status_code == 404
            assert client.get("/trades/T1").status_code == 200
    assert gateway.stats.per_trade == {"T1": 1}


# --- the benchmark's yardstick: the earliest a batch can finish ----------------------


@pytest.mark.parametrize(
    ("limiter", "extra", "busy"),
    [
        # 40 at once, 40 at each turn: the first half a window in, the fourth 3 windows later.
        ("fixed", {"window_phase": 0.5}, 7.0),
        # 40 at once, then 40 each time the first of the last 40 ages out.
        ("sliding", {}, 8.0),
        # The burst at once, then the refill: 190 at 20/s.
        ("token", {"rate_limit": 20, "window": 1.0, "burst": 10}, 9.5),
    ],
)
def test_the_earliest_finish_is_the_limiters_own(
    limiter: str, extra: dict[str, Any], busy: float
) -> None:
    """200 requests, no latency: what the limiter admits soonest, as worked out by hand."""
    config = GatewayConfig(**({"limiter": limiter, "rate_limit": 40, "window": 2.0} | extra))
    assert earliest_busy(config, 200, 8, seed=11) == pytest.approx(busy, abs=1e-6)


def test_the_earliest_finish_waits_for_a_free_worker() -> None:
    """A limit that never binds: two workers, each answer a second: four requests take 2 s."""
    config = GatewayConfig(rate_limit=1000, window=1.0, latency_ms=1000.0)
    assert earliest_busy(config, 4, 2, seed=0) == pytest.approx(2.0)


def test_the_benchmark_tells_why_trades_failed(tmp_path: Path) -> None:
    """The benchmark deletes its files when it ends: the reasons its clients gave up
    trades are counted from the failures file and printed beside the row (ours write a
    reason, the naive recipe a status)."""
    failed = tmp_path / "failed"
    assert failure_reasons(failed) == {}
    failed.write_text(
        '{"trade_id":"A","reason":"max_attempts","status":503}\n'
        '{"trade_id":"B","reason":"max_attempts","status":500}\n'
        '{"trade_id":"C","status":503}\n'
        '{"trade_id":"D","reason":"not_found","status":404}\n'
    )
    assert failure_reasons(failed) == {"max_attempts": 2, "not_found": 1, "status 503": 1}
