"""The only module that talks httpx: one trade, with retries.

httpx exceptions are mapped to a ``Cause`` here and nowhere else; the retry
decision itself is ``policy.decide``; waiting goes through the ``RateGate``
and the ``Clock``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from trade_ingest import __version__
from trade_ingest.audit import AuditLog
from trade_ingest.clock import Clock
from trade_ingest.config import Settings
from trade_ingest.pacing import RateGate
from trade_ingest.payload import InvalidBody, check_trade_body
from trade_ingest.policy import (
    Cause,
    GiveUp,
    RetryPolicy,
    classify_status,
    decide,
    unreadable_hint,
    wait_hint,
)
from trade_ingest.stats import RunStats

USER_AGENT = f"trade-ingest/{__version__} (+https://pypi.org/project/trade-ingest/)"
# Error bodies are read (so the connection can be reused) but only this much.
_ERROR_BODY_CAP = 64 * 1024


def idempotency_key(trade_id: str) -> str:
    """Stable across retries and re-runs, so a gateway can recognise a repeated request."""
    return hashlib.sha256(b"trade-ingest/v1\x00" + trade_id.encode()).hexdigest()[:32]


def trade_path(trade_id: str) -> str:
    """``/trades/{id}`` with every reserved character of the ID percent-encoded."""
    return "/trades/" + quote(trade_id, safe="")


def build_client(settings: Settings, token: str | None) -> httpx.AsyncClient:
    """One client a run: pool sized to the concurrency, keep-alive, no redirects."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=settings.base_url,
        headers=headers,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        ),
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    trade_id: str
    body: str
    attempts: int
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Failed:
    trade_id: str
    reason: str
    status: int | None
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    cause: Cause | None
    headers: httpx.Headers
    body: str
    error: str


class _BodyTooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """The decoded body, refusing more than ``cap`` bytes (a gzip bomb included)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


_TRANSPORT_CAUSES: tuple[tuple[type[Exception], Cause], ...] = (
    (httpx.PoolTimeout, Cause.POOL_TIMEOUT),
    (httpx.TimeoutException, Cause.TIMEOUT),
    (httpx.ConnectError, Cause.CONNECT_ERROR),
    (httpx.DecodingError, Cause.INVALID_BODY),
    (httpx.TransportError, Cause.CONNECTION_CLOSED),
)


def _transport_cause(exc: httpx.HTTPError) -> Cause:
    for kind, cause in _TRANSPORT_CAUSES:
        if isinstance(exc, kind):
            return cause
    return Cause.CONNECTION_CLOSED


class TradeFetcher:
    """Fetches one trade at a time for a worker, sharing client, gate and stats."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        gate: RateGate,
        clock: Clock,
        rng: random.Random,
        audit: AuditLog,
        stats: RunStats,
    ) -> None:
        self._client = client
        self._settings = settings
        self._policy: RetryPolicy = settings.retry_policy()
        self._gate = gate
        self._clock = clock
        self._rng = rng
        self._audit = audit
        self._stats = stats

    async def _attempt(self, trade_id: str) -> _Attempt:
        headers = {"Idempotency-Key": idempotency_key(trade_id)}
        empty = httpx.Headers()
        try:
            async with (
                asyncio.timeout(self._settings.attempt_timeout),
                self._client.stream("GET", trade_path(trade_id), headers=headers) as response,
            ):
                status = response.status_code
                cause = classify_status(status)
                cap = self._settings.max_body_bytes if cause is None else _ERROR_BODY_CAP
                try:
                    raw = await _read_capped(response, cap)
                except _BodyTooLarge:
                    if cause is not None:  # an error status says enough without its body
                        return _Attempt(status, cause, response.headers, "", "")
                    return _Attempt(
                        status,
                        Cause.BODY_TOO_LARGE,
                        response.headers,
                        "",
                        f"body larger than max_body_bytes ({self._settings.max_body_bytes})",
                    )
                if cause is not None:
                    return _Attempt(status, cause, response.headers, "", "")
                try:
                    body = check_trade_body(raw, trade_id)
                except InvalidBody as exc:
                    return _Attempt(status, Cause.INVALID_BODY, response.headers, "", str(exc))
                return _Attempt(status, None, response.headers, body, "")
        except TimeoutError:
            limit = self._settings.attempt_timeout
            return _Attempt(None, Cause.TIMEOUT, empty, "", f"attempt took over {limit:g}s")
        except httpx.HTTPError as exc:
            cause = _transport_cause(exc)
            return _Attempt(None, cause, empty, "", f"{type(exc).__name__}: {exc}"[:300])

    async def fetch(self, trade_id: str) -> Fetched | Failed:
        """Try ``trade_id`` until it is fetched or a ``GiveUp`` says stop."""
        attempt = 0
        audit, clock, gate, stats = self._audit, self._clock, self._gate, self._stats
        while True:
            blocked = gate.wait_needed(clock.monotonic())
            if blocked > self._policy.max_wait:
                detail = (
                    f"batch paused for {blocked:.0f}s more, over max_wait "
                    f"{self._policy.max_wait:g}s; run again later"
                )
                return self._give_up(trade_id, attempt, None, GiveUp("deferred", detail))
            await gate.wait_turn()
            attempt += 1
            started = clock.monotonic()
            result = await self._attempt(trade_id)
            latency = clock.monotonic() - started
            stats.attempts += 1
            stats.latency.record(latency)
            if result.status is not None:
                stats.responses_by_status[result.status] += 1
            outcome = "ok" if result.cause is None else result.cause.value
            audit.emit(
                "trade.attempt",
                trade_id=trade_id,
                attempt=attempt,
                outcome=outcome,
                status=result.status,
                latency_ms=round(latency * 1000, 3),
                **({"error": result.error} if result.error else {}),
            )
            if result.cause is None:
                fetched_at = clock.wall()
                audit.emit(
                    "trade.fetched", trade_id=trade_id, attempt=attempt, status=result.status
                )
                return Fetched(trade_id, result.body, attempt, fetched_at)
            if result.cause is Cause.POOL_TIMEOUT:
                stats.pool_timeouts += 1
            hint = wait_hint(result.headers, clock.wall()) if result.status else None
            decision = decide(
                self._policy,
                attempt=attempt,
                cause=result.cause,
                status=result.status,
                hint=hint,
                rng=self._rng,
            )
            if isinstance(decision, GiveUp):
                return self._give_up(trade_id, attempt, result, decision)
            stats.retries_by_cause[result.cause.value] += 1
            event: dict[str, object] = {
                "trade_id": trade_id,
                "attempt": attempt,
                "cause": result.cause.value,
                "status": result.status,
                "delay_s": round(decision.delay, 3),
                "delay_source": decision.source,
                "batch_wide": decision.batch_wide,
            }
            if hint is not None:
                event["hint"] = hint.raw
            unreadable = unreadable_hint(result.headers)
            if unreadable is not None:
                event["unreadable_retry_after"] = unreadable[:200]
            if result.cause is Cause.POOL_TIMEOUT:
                event["note"] = (
                    "local connection pool exhausted: our own capacity, not gateway throttling"
                )
            audit.emit("trade.retry_scheduled", **event)
            if decision.batch_wide:
                now = clock.monotonic()
                if gate.pause(now, decision.delay):
                    audit.emit(
                        "batch.paused",
                        trade_id=trade_id,
                        attempt=attempt,
                        cause=result.cause.value,
                        status=result.status,
                        pause_s=round(decision.delay, 3),
                        delay_source=decision.source,
                    )
            else:
                await clock.sleep(decision.delay)

    def _give_up(
        self, trade_id: str, attempt: int, result: _Attempt | None, decision: GiveUp
    ) -> Failed:
        status = result.status if result else None
        error = decision.detail
        if result is not None and result.error:
            error = f"{decision.detail}: {result.error}"
        self._audit.emit(
            "trade.failed",
            trade_id=trade_id,
            attempt=attempt,
            reason=decision.reason,
            status=status,
            error=error,
        )
        return Failed(trade_id, decision.reason, status, attempt, error)
