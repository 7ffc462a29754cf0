"""One trade with retries, against respx: waits and audit events exactly as expected."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import respx

from tests.conftest import FixedRandom
from trade_ingest.audit import AuditLog
from trade_ingest.clock import FakeClock
from trade_ingest.config import Settings
from trade_ingest.fetch import Failed, Fetched, TradeFetcher, build_client, idempotency_key
from trade_ingest.pacing import SLOT_RECHECK, WINDOW_GUARD, RateGate
from trade_ingest.policy import Quota
from trade_ingest.stats import RunStats

BASE = "http://gateway.test"
TRADE = {"trade_id": "T1", "price": 84.35}


class Harness:
    def __init__(
        self, settings: Settings, token: str | None = None, clock: FakeClock | None = None
    ) -> None:
        self.clock = clock or FakeClock()
        self.rng = FixedRandom(0.5)
        self.stream = io.StringIO()
        self.audit = AuditLog(self.stream, "B1", self.clock, secrets=[token] if token else [])
        self.stats = RunStats()
        self.gate = RateGate(self.clock, self.rng, settings.release_jitter)
        self.client = build_client(settings, token)
        self.fetcher = TradeFetcher(
            self.client, settings, self.gate, self.clock, self.rng, self.audit, self.stats
        )

    def events(self, *drop: str) -> list[dict[str, Any]]:
        events = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        for event in events:
            for key in ("timestamp", "batch_id", "seq", "prev_hash", "hash", *drop):
                event.pop(key, None)
        return events


# respx mocks httpcore, httpx's own transport: these tests pin it.
SETTINGS = Settings(base_url=BASE, release_jitter=0.0, max_attempts=4, http_transport="httpcore")


@pytest.mark.anyio
async def test_429_then_503_then_200() -> None:
    """Retry-After 2 pauses the batch 2s; the 503 backs off 0.5s; the trade is fetched."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/trades/T1").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "2"}),
                httpx.Response(503),
                httpx.Response(200, json=TRADE),
            ]
        )
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Fetched)
    assert outcome.attempts == 3
    assert json.loads(outcome.body) == {"trade_id": "T1", "price": 84.35}
    assert h.clock.sleeps == [2.0, 0.5]
    assert route.call_count == 3
    assert h.events("latency_ms") == [
        {
            "event": "trade.attempt",
            "trade_id": "T1",
            "attempt": 1,
            "outcome": "rate_limited",
            "status": 429,
        },
        {
            "event": "trade.retry_scheduled",
            "trade_id": "T1",
            "attempt": 1,
            "cause": "rate_limited",
            "status": 429,
            "delay_s": 2.0,
            "delay_source": "retry_after",
            "batch_wide": True,
            "hint": "2",
        },
        {
            "event": "batch.paused",
            "trade_id": "T1",
            "attempt": 1,
            "cause": "rate_limited",
            "status": 429,
            "pause_s": 2.0,
            "delay_source": "retry_after",
        },
        {"event": "batch.resumed", "paused_s": 2.0},
        {
            "event": "trade.attempt",
            "trade_id": "T1",
            "attempt": 2,
            "outcome": "server_error",
            "status": 503,
        },
        {
            "event": "trade.retry_scheduled",
            "trade_id": "T1",
            "attempt": 2,
            "cause": "server_error",
            "status": 503,
            "delay_s": 0.5,
            "delay_source": "backoff",
            "batch_wide": False,
        },
        {"event": "trade.attempt", "trade_id": "T1", "attempt": 3, "outcome": "ok", "status": 200},
        {"event": "trade.fetched", "trade_id": "T1", "attempt": 3, "status": 200},
    ]
    assert h.stats.retries_by_cause == {"rate_limited": 1, "server_error": 1}
    assert h.gate.paused_seconds == 2.0


@pytest.mark.anyio
async def test_request_headers_and_path_encoding() -> None:
    """Accept, User-Agent, a stable Idempotency-Key, the token, and an encoded path."""
    h = Harness(SETTINGS, token="tok-123456")
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(url__regex=r".*").mock(
            return_value=httpx.Response(200, json={"trade_id": "a:b+c ü"})
        )
        async with h.client:
            outcome = await h.fetcher.fetch("a:b+c ü")
    assert isinstance(outcome, Fetched)
    request = route.calls.last.request
    assert request.url.raw_path == b"/trades/a%3Ab%2Bc%20%C3%BC"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("trade-ingest/")
    assert request.headers["idempotency-key"] == idempotency_key("a:b+c ü")
    assert request.headers["authorization"] == "Bearer tok-123456"
    assert "tok-123456" not in h.stream.getvalue()


def test_idempotency_key_is_stable_and_distinct() -> None:
    """The same trade always gets the same key; different trades differ."""
    assert idempotency_key("T1") == idempotency_key("T1")
    assert idempotency_key("T1") != idempotency_key("T2")
    assert len(idempotency_key("T1")) == 32


@pytest.mark.anyio
async def test_404_is_one_request_and_permanent() -> None:
    """A 404 is not retried; the failure says why."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/trades/T1").mock(return_value=httpx.Response(404))
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert outcome == Failed("T1", "http_404", 404, 1, "HTTP 404: not retried")
    assert route.call_count == 1
    assert h.clock.sleeps == []


@pytest.mark.anyio
async def test_body_that_is_not_json_is_retried_then_fails() -> None:
    """A 200 whose body is not JSON is never a result."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/trades/T1").mock(return_value=httpx.Response(200, text="<html>oops"))
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Failed)
    assert outcome.reason == "retries_exhausted"
    assert outcome.attempts == 4
    assert "not valid JSON" in outcome.error
    assert route.call_count == 4
    delays = [e["delay_s"] for e in h.events() if e["event"] == "trade.retry_scheduled"]
    assert delays == [0.25, 0.5, 1.0]
    assert sum(h.clock.sleeps) == pytest.approx(1.75)  # nothing else answered well meanwhile


class AnsweringGateway(FakeClock):
    """While a trade waits, the gateway answers other workers' trades: one per sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.others: list[Callable[[], Awaitable[object]]] = []

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.others:
            await self.others.pop(0)()


@pytest.mark.anyio
async def test_a_trades_own_backoff_ends_early_once_the_gateway_answers_others_well() -> None:
    """Three 503s for T1; its third backoff (1 s) ends after the first retry's base
    (0.5 s) once four other trades came back well: the 503s were passing, and a trade
    waiting out a long backoff would hold the end of the batch."""
    clock = AnsweringGateway()
    h = Harness(SETTINGS, clock=clock)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[httpx.Response(503)] * 3 + [httpx.Response(200, json=TRADE)]
        )
        mock.get(url__regex=r"/trades/T[2-9]").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"trade_id": request.url.path.rsplit("/", 1)[-1], "price": 84.35}
            )
        )
        async with h.client:

            async def four_others() -> None:
                for n in range(2, 6):
                    assert isinstance(await h.fetcher.fetch(f"T{n}"), Fetched)

            async def nothing() -> None:
                return None

            # Four other trades come back well while the third backoff is at its base.
            clock.others = [nothing, nothing, four_others]
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Fetched)
    assert outcome.attempts == 4
    delays = [e["delay_s"] for e in h.events() if e["event"] == "trade.retry_scheduled"]
    assert delays == [0.25, 0.5, 1.0]
    assert clock.sleeps[2:] == [0.5]  # not 1.0


@pytest.mark.anyio
async def test_connection_errors_are_retried() -> None:
    """A refused connection and a server closing early are retried with backoff."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.RemoteProtocolError("Server disconnected without sending a response."),
                httpx.Response(200, json=TRADE),
            ]
        )
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Fetched)
    outcomes = [e["outcome"] for e in h.events() if e["event"] == "trade.attempt"]
    assert outcomes == ["connect_error", "connection_closed", "ok"]


@pytest.mark.anyio
async def test_pool_timeout_is_called_local() -> None:
    """A pool timeout is recorded as our own capacity problem, not throttling."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[httpx.PoolTimeout("pool"), httpx.Response(200, json=TRADE)]
        )
        async with h.client:
            await h.fetcher.fetch("T1")
    scheduled = [e for e in h.events() if e["event"] == "trade.retry_scheduled"]
    assert scheduled[0]["cause"] == "pool_timeout"
    assert "not gateway throttling" in scheduled[0]["note"]
    assert h.stats.pool_timeouts == 1


@pytest.mark.anyio
async def test_long_retry_after_defers_the_trade_and_the_batch() -> None:
    """A hint over max_wait defers this trade, and the next one without sending."""
    h = Harness(Settings(base_url=BASE, max_wait=60.0, http_transport="httpcore"))
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(url__regex=r".*").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "3600"})
        )
        async with h.client:
            first = await h.fetcher.fetch("T1")
            h.gate.pause(h.clock.monotonic(), 3600.0)
            second = await h.fetcher.fetch("T2")
    assert isinstance(first, Failed) and first.reason == "deferred"
    assert isinstance(second, Failed) and second.reason == "deferred"
    assert second.attempts == 0
    assert route.call_count == 1


@pytest.mark.anyio
async def test_a_paced_slot_over_max_wait_defers_the_trade_without_sending() -> None:
    """--rate-limit 1/hour, max_wait 60 s: the first trade goes; the next one's slot is an
    hour away (not handed out yet: past the horizon), so it is deferred at once."""
    settings = Settings(
        base_url=BASE, max_wait=60.0, rate_limit="1/hour", http_transport="httpcore"
    )
    h = Harness(settings)
    start = h.clock.monotonic()
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(url__regex=r".*").mock(return_value=httpx.Response(200, json=TRADE))
        async with h.client:
            first = await h.fetcher.fetch("T1")
            second = await h.fetcher.fetch("T2")
    assert isinstance(first, Fetched)
    assert isinstance(second, Failed) and second.reason == "deferred"
    assert "over max_wait 60s" in second.error
    assert route.call_count == 1
    assert h.clock.monotonic() - start < 1.0


@pytest.mark.anyio
async def test_a_send_log_full_for_a_span_past_max_wait_defers_at_once() -> None:
    """Two requests per stated 100 s, both taken, and a third slot held a span out by
    another worker: T1's slot would be two spans away, past max_wait 60 s. It is deferred
    at once, not after waiting for the held slot to come within the horizon."""
    settings = Settings(base_url=BASE, max_wait=60.0, http_transport="httpcore")
    h = Harness(settings)
    pacer = h.fetcher.pacer
    start = h.clock.monotonic()
    pacer.on_quota(start, Quota(limit=2, remaining=2, reset=100.0, window=100.0))
    held = [pacer.reserve(start) for _ in range(4)]  # other workers': two now, two a span out
    assert held[:2] == [start, start] and all(slot is not None for slot in held)
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.get(url__regex=r".*").mock(return_value=httpx.Response(200, json=TRADE))
        async with h.client:
            result = await h.fetcher.fetch("T1")
    assert isinstance(result, Failed) and result.reason == "deferred"
    assert "next request in 202s, over max_wait 60s" in result.error
    assert route.call_count == 0
    assert h.clock.monotonic() == start


@pytest.mark.anyio
async def test_with_max_wait_zero_a_worker_waits_for_the_first_answer() -> None:
    """max_wait 0: a worker told to ask again while the first request is unanswered (only
    one goes before the gateway has said anything) waits for it; it is no wait for a slot."""
    clock = AnsweringGateway()
    settings = Settings(base_url=BASE, max_wait=0.0, http_transport="httpcore")
    h = Harness(settings, clock=clock)
    pacer = h.fetcher.pacer
    assert pacer.reserve(clock.monotonic()) is not None  # another worker's first request

    async def answered() -> None:
        pacer.on_response()

    clock.others = [answered]
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(return_value=httpx.Response(200, json=TRADE))
        async with h.client:
            assert isinstance(await h.fetcher.fetch("T1"), Fetched)


@pytest.mark.anyio
async def test_garbage_retry_after_falls_back_to_backoff_and_is_logged() -> None:
    """An unreadable Retry-After means no hint: backoff, and the audit log says so."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "whenever"}),
                httpx.Response(200, json=TRADE),
            ]
        )
        async with h.client:
            await h.fetcher.fetch("T1")
    scheduled = next(e for e in h.events() if e["event"] == "trade.retry_scheduled")
    assert scheduled["delay_source"] == "backoff"
    assert scheduled["unreadable_retry_after"] == "whenever"
    assert scheduled["batch_wide"] is True
    assert h.clock.sleeps == [0.75]  # equal jitter: uniform(0.5, 1) x throttle_base 1s


@pytest.mark.anyio
async def test_429s_in_a_row_without_a_hint_lengthen_the_batch_pause() -> None:
    """The second 429 in a row doubles the pause's ceiling: the streak counts it."""
    h = Harness(SETTINGS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[httpx.Response(429), httpx.Response(429), httpx.Response(200, json=TRADE)]
        )
        async with h.client:
            await h.fetcher.fetch("T1")
    assert h.clock.sleeps == [0.75, 1.5]  # uniform(0.5, 1) x 1 s, then x 2 s


@pytest.mark.anyio
async def test_retry_after_zero_again_and_again_is_not_a_tight_loop() -> None:
    """``Retry-After: 0`` is taken once; the next 429 in a row waits our own backoff
    (and the audit log keeps what the gateway said)."""
    h = Harness(SETTINGS)
    answers = iter([429, 429, 429, 200])

    def gateway(request: httpx.Request) -> httpx.Response:
        h.clock.advance(0.01)  # a round trip
        status = next(answers)
        if status == 429:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json=TRADE)

    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(side_effect=gateway)
        async with h.client:
            await h.fetcher.fetch("T1")
    assert [s for s in h.clock.sleeps if s > 0] == [0.75, 1.5]
    scheduled = [e for e in h.events() if e["event"] == "trade.retry_scheduled"]
    assert [e["delay_source"] for e in scheduled] == ["retry_after", "backoff", "backoff"]
    assert all(e["hint"] == "0" for e in scheduled)


@pytest.mark.anyio
async def test_a_hint_too_short_to_take_is_not_cut_shorter_by_the_pacer() -> None:
    """After a success, ``Retry-After: 0`` again and again: each 429 in a row waits our
    backoff for the row so far, however the pacer reads the refusals (nothing through
    since the success): the pacer shortens only a pause no hint came with."""
    h = Harness(SETTINGS)
    answers = iter([200, 429, 429, 429, 200])

    def gateway(request: httpx.Request) -> httpx.Response:
        h.clock.advance(0.01)  # a round trip
        status = next(answers)
        if status == 429:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json={**TRADE, "trade_id": request.url.path.rsplit("/")[-1]})

    with respx.mock(base_url=BASE) as mock:
        mock.get(url__regex=r"/trades/T\d").mock(side_effect=gateway)
        async with h.client:
            await h.fetcher.fetch("T0")
            await h.fetcher.fetch("T1")
    assert [s for s in h.clock.sleeps if s > 0] == [0.75, 1.5]


@pytest.mark.anyio
async def test_oversized_body_is_cut_off() -> None:
    """A body over max_body_bytes is refused, never written."""
    h = Harness(Settings(base_url=BASE, max_body_bytes=100, http_transport="httpcore"))
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            return_value=httpx.Response(200, json={"trade_id": "T1", "x": "y" * 500})
        )
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Failed)
    assert outcome.reason == "body_too_large"


@pytest.mark.anyio
async def test_redirect_is_not_followed() -> None:
    """A 302 is a recorded failure: the token never travels to another host."""
    h = Harness(SETTINGS, token="tok-abcdef")
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            return_value=httpx.Response(302, headers={"Location": "https://evil.test/x"})
        )
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Failed)
    assert outcome.reason == "http_302"


@pytest.mark.anyio
async def test_a_named_wait_releases_together_and_our_backoff_spreads() -> None:
    """Retry-After says when the quota is back: no release jitter then. A 429 without a
    hint pauses for our own backoff, whose end is a guess: workers come back spread."""
    settings = replace(SETTINGS, release_jitter=0.4)
    h = Harness(settings)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "2"}),
                httpx.Response(429),
                httpx.Response(200, json=TRADE),
            ]
        )
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Fetched)
    named, backoff = h.clock.sleeps
    assert named == 2.0  # to the hint's end, not a jot more
    assert backoff > 0.4 * 0.5  # our backoff, then up to 0.4 s of spread (FixedRandom 0.5)
    paused = [e for e in h.events() if e["event"] == "batch.paused"]
    assert [e["delay_source"] for e in paused] == ["retry_after", "backoff"]
    assert backoff == pytest.approx(paused[1]["pause_s"] + 0.4 * 0.5)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "given_back"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.RemoteProtocolError("closed before answering"), True),
        (httpx.ReadTimeout("no answer"), False),  # it may be in the gateway's hands
    ],
)
async def test_a_request_the_gateway_never_answered_gives_its_window_slot_back(
    failure: httpx.HTTPError, given_back: bool
) -> None:
    """Paced by a stated window of 2, a send that failed before any answer is taken out
    of the log (the gateway did not count it), so the retry does not use up the window;
    one that timed out stays in it."""
    h = Harness(SETTINGS)
    pacer = h.fetcher.pacer
    pacer.on_quota(h.clock.monotonic(), Quota(limit=2, remaining=2, reset=1.0, window=1.0))
    with respx.mock(base_url=BASE) as mock:
        mock.get("/trades/T1").mock(side_effect=[failure, httpx.Response(200, json=TRADE)])
        async with h.client:
            assert isinstance(await h.fetcher.fetch("T1"), Fetched)
    span = pacer.window_span()
    assert span is not None
    now = h.clock.monotonic()
    free_now = pacer.next_window_slot(now, 2, span, take_probe=False) == now
    assert free_now is given_back


@pytest.mark.anyio
async def test_a_worker_asleep_towards_a_far_slot_sends_when_the_gateway_promised() -> None:
    """One request per stated 10 s window, spent: T1's slot is 10 s away. While it
    sleeps, another answer says quota is back in half a second: T1 goes then."""
    clock = AnsweringGateway()
    h = Harness(SETTINGS, clock=clock)
    pacer = h.fetcher.pacer
    start = clock.monotonic()
    pacer.on_quota(start, Quota(limit=1, remaining=1, reset=10.0, window=10.0))
    assert pacer.reserve(start) == start  # another worker's request

    async def promise() -> None:
        quota = Quota(limit=1, remaining=0, reset=0.5, window=10.0)
        pacer.on_quota(clock.monotonic(), quota, sent_at=start)

    clock.others = [promise]
    sent: list[float] = []
    with respx.mock(base_url=BASE) as mock:

        def answer(request: httpx.Request) -> httpx.Response:
            sent.append(clock.monotonic())
            return httpx.Response(200, json=TRADE)

        mock.get("/trades/T1").mock(side_effect=answer)
        async with h.client:
            assert isinstance(await h.fetcher.fetch("T1"), Fetched)
    assert sent == [pytest.approx(start + SLOT_RECHECK + 0.5 + WINDOW_GUARD)]


@pytest.mark.anyio
async def test_a_wait_for_a_bursts_first_answer_past_the_deadline_defers_the_trade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker told to ask again once the first request of the next burst is answered,
    10 s from now, with the deadline in 1 s: the trade is deferred at once, not after
    sleeping past the deadline."""
    h = Harness(SETTINGS)
    h.fetcher.deadline_at = h.clock.monotonic() + 1.0
    monkeypatch.setattr(h.fetcher.pacer, "reserve", lambda now: None)
    monkeypatch.setattr(h.fetcher.pacer, "poll_delay", lambda now: 10.0)
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.get("/trades/T1").mock(return_value=httpx.Response(200, json=TRADE))
        async with h.client:
            outcome = await h.fetcher.fetch("T1")
    assert isinstance(outcome, Failed)
    assert "deadline" in outcome.error
    assert not route.called
    assert h.clock.sleeps == []
