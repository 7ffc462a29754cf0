"""The simulated gateway: deterministic trades, the fixed window, headers and faults."""

from __future__ import annotations

import json

import httpx
import pytest

from trade_ingest.policy import parse_http_date
from trade_ingest.simulator import (
    FixedWindowLimiter,
    GatewayConfig,
    SimulatedGateway,
    is_unknown,
    make_trade,
    render_trade_body,
)


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
    assert gateway.stats.per_trade["a/b"] == 1


@pytest.mark.parametrize(
    ("retry_after", "reset_style"),
    [("seconds", "delta"), ("http-date", "epoch"), ("none", "none")],
)
def test_rate_limit_headers_in_each_style(retry_after: str, reset_style: str) -> None:
    """Past the quota: 429 with Retry-After and X-RateLimit-* in the configured style."""
    config = GatewayConfig(
        rate_limit=2,
        window=30.0,
        retry_after=retry_after,  # type: ignore[arg-type]
        reset_style=reset_style,  # type: ignore[arg-type]
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
    if reset_style == "none":
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
        GatewayConfig(latency_min_ms=5, latency_max_ms=1)
