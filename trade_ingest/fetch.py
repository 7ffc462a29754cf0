"""The only module that talks httpx: one trade, with retries.

httpx exceptions are mapped to a ``Cause`` here and nowhere else; the retry
decision itself is ``policy.decide``; waiting goes through the ``RateGate``
and the ``Clock``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar, overload
from urllib.parse import quote

import httpx

from trade_ingest import __version__
from trade_ingest.audit import AuditLog
from trade_ingest.clock import Clock
from trade_ingest.config import Settings
from trade_ingest.errors import ConfigError
from trade_ingest.pacing import (
    SLOT_RECHECK,
    Pacer,
    PacingEvent,
    RateGate,
    RetryBudget,
)
from trade_ingest.payload import InvalidBody, check_trade_body
from trade_ingest.policy import (
    Cause,
    GiveUp,
    Retry,
    RetryPolicy,
    ServerClock,
    classify_status,
    decide,
    parse_quota,
    unreadable_hint,
    wait_hint,
)
from trade_ingest.stats import RunStats

USER_AGENT = f"trade-ingest/{__version__} (+https://pypi.org/project/trade-ingest/)"
# Error bodies are read (so the connection can be reused) but only this much.
_ERROR_BODY_CAP = 64 * 1024
# How often a trade in its own backoff looks whether the gateway has recovered.
HEALTH_POLL = 0.1


def idempotency_key(trade_id: str) -> str:
    """Stable across retries and re-runs, so a gateway can recognise a repeated request."""
    return hashlib.sha256(b"trade-ingest/v1\x00" + trade_id.encode()).hexdigest()[:32]


def trade_path(trade_id: str) -> str:
    """``/trades/{id}`` with every reserved character of the ID percent-encoded."""
    return "/trades/" + quote(trade_id, safe="")


def tls_verification(settings: Settings) -> ssl.SSLContext | bool:
    """Always verify; against ``ca_bundle`` when a private PKI is configured."""
    if not settings.ca_bundle:
        return True
    try:
        return ssl.create_default_context(cafile=settings.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"setting 'ca_bundle': cannot load {settings.ca_bundle}: {exc}") from None


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, which looks at a response only when it sets a cookie.

    httpx wraps every response and its request for ``http.cookiejar`` (a
    ``urllib`` request, the URL parsed again), which finds no ``Set-Cookie``
    and does nothing: about a twentieth of a trade's CPU. Cookies a gateway
    does set are kept and sent back as before.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class TradeUrls:
    """``/trades/{id}`` on the client's ``base_url``, as the ``httpx.URL`` httpx would build.

    httpx parses a relative URL, then the merged one again (about a twentieth of
    a trade's CPU). The trade's path is percent-encoded by ``trade_path`` already,
    so it takes the place of the base URL's path in httpx's parsed form instead.
    Checked once against httpx's own merge; where it could differ (a base URL
    with a query, an ID of dots, another httpx), httpx merges it as before.
    """

    _PROBE = "EEX-1/2 ?#%41\u00e9.."

    def __init__(self, client: httpx.AsyncClient) -> None:
        base = client.base_url
        reference = getattr(base, "_uri_reference", None)
        self._reference = None if base.query or not base.raw_path.endswith(b"/") else reference
        if self._reference is not None:
            self._prefix = base.raw_path.decode("ascii")[:-1]
            if client.build_request("GET", trade_path(self._PROBE)).url != self.url(self._PROBE):
                self._reference = None

    def url(self, trade_id: str) -> httpx.URL | str:
        """What to pass httpx for ``trade_id``: a URL ready made, or the path for httpx to merge."""
        path = trade_path(trade_id)
        if self._reference is None or trade_id in (".", ".."):
            return path
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = self._reference._replace(path=self._prefix + path)
        return url


def build_client(settings: Settings, token: str | None) -> httpx.AsyncClient:
    """One client a run: pool sized to the concurrency, keep-alive, no redirects."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify = tls_verification(settings)
    limits = httpx.Limits(
        max_connections=settings.concurrency,
        max_keepalive_connections=settings.concurrency,
    )
    transport: httpx.AsyncBaseTransport | None = None
    trust_env = settings.trust_env
    if settings.http_transport == "aiohttp":
        try:
            from trade_ingest.transport import AiohttpTransport, environment_proxy
        except ImportError:
            raise ConfigError(
                "setting 'http_transport' is aiohttp, but aiohttp is not installed; "
                'install aiohttp (a dependency of trade-ingest), or set http_transport = "httpcore"'
            ) from None
        proxy = environment_proxy(settings.base_url) if trust_env else None
        transport = AiohttpTransport(verify=verify, limits=limits, proxy=proxy)
        trust_env = False  # the transport was given the environment's proxy
    client = httpx.AsyncClient(
        verify=verify,
        trust_env=trust_env,
        transport=transport,
        base_url=settings.base_url,
        headers=headers,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        limits=limits,
        follow_redirects=False,
    )
    client._cookies = _Cookies()
    return client


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
class HeldBack:
    """A trade whose next retry waits for the batch's retry budget to grow.

    The budget grows with every first attempt, so a run of errors early in a
    batch holds a few trades back rather than failing them; the batch takes
    them up again once the budget allows (``TradeFetcher.release``).
    """

    trade_id: str
    attempts: int
    cause: Cause
    status: int | None
    error: str


_Default = TypeVar("_Default")


class _ResponseHeaders(Mapping[str, str]):
    """A response's headers for the policy to read: a lookup is one dict lookup.

    ``httpx.Headers`` scans its raw list, decoding, for every lookup, and the
    policy looks up about ten names on every response. Names are matched
    case-insensitively and repeated fields joined with ", ", as httpx does.
    """

    __slots__ = ("_fields",)

    def __init__(self, headers: httpx.Headers) -> None:
        self._fields = dict(headers.items())

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    # Most names the policy asks for are absent: answered without raising a KeyError,
    # which is what ``Mapping.get`` and ``in`` would do for each.
    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str | _Default) -> str | _Default: ...
    def get(self, name: str, /, default: object = None) -> object:
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    cause: Cause | None
    headers: Mapping[str, str]
    body: str
    error: str
    # Never reached the gateway's counter, or most likely not (see ``_UNCOUNTED``).
    uncounted: bool = False


# Failures before any answer that a gateway's rate limit has not counted: no connection
# was made, or (most often a kept-alive connection the server closed as we sent) it was
# closed before a status line came back. Taking one as not counted when it was costs
# at most one 429, whose pause ends when the send log would have freed its slot anyway.
_UNCOUNTED = frozenset({Cause.CONNECT_ERROR, Cause.POOL_TIMEOUT, Cause.CONNECTION_CLOSED})


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
        *,
        pacer: Pacer | None = None,
        budget: RetryBudget | None = None,
        deadline_at: float | None = None,
    ) -> None:
        self._client = client
        self._urls = TradeUrls(client)
        self._settings = settings
        self._policy: RetryPolicy = settings.retry_policy()
        self._gate = gate
        self.pacer = pacer or Pacer(settings.rate_per_second())
        self._budget = budget or RetryBudget(settings.retry_budget, settings.retry_budget_min)
        self.deadline_at = deadline_at
        self._clock = clock
        self._rng = rng
        self._audit = audit
        self._stats = stats
        self.server_clock = ServerClock()
        # Trades the gateway answered well, all workers together.
        self._answered_well = 0

    async def _attempt(self, trade_id: str) -> _Attempt:
        headers = {"Idempotency-Key": idempotency_key(trade_id)}
        answered = False
        try:
            async with (
                asyncio.timeout(self._settings.attempt_timeout),
                self._client.stream("GET", self._urls.url(trade_id), headers=headers) as response,
            ):
                status = response.status_code
                answered = True
                cause = classify_status(status)
                received = _ResponseHeaders(response.headers)
                cap = self._settings.max_body_bytes if cause is None else _ERROR_BODY_CAP
                try:
                    raw = await _read_capped(response, cap)
                except _BodyTooLarge:
                    if cause is not None:  # an error status says enough without its body
                        return _Attempt(status, cause, received, "", "")
                    return _Attempt(
                        status,
                        Cause.BODY_TOO_LARGE,
                        received,
                        "",
                        f"body larger than max_body_bytes ({self._settings.max_body_bytes})",
                    )
                if cause is not None:
                    return _Attempt(status, cause, received, "", "")
                try:
                    body = check_trade_body(raw, trade_id)
                except InvalidBody as exc:
                    return _Attempt(status, Cause.INVALID_BODY, received, "", str(exc))
                return _Attempt(status, None, received, body, "")
        except TimeoutError:
            limit = self._settings.attempt_timeout
            return _Attempt(None, Cause.TIMEOUT, _NO_HEADERS, "", f"attempt took over {limit:g}s")
        except httpx.HTTPError as exc:
            cause = _transport_cause(exc)
            error = f"{type(exc).__name__}: {exc}"[:300]
            uncounted = cause in _UNCOUNTED and not answered
            return _Attempt(None, cause, _NO_HEADERS, "", error, uncounted)

    def past_deadline(self, moment: float) -> bool:
        return self.deadline_at is not None and moment > self.deadline_at

    def deadline_failure(self, trade_id: str) -> Failed:
        """The record of a trade not even tried because the deadline has passed."""
        return self._deadline_give_up(trade_id, 0)

    def _deadline_give_up(self, trade_id: str, attempt: int) -> Failed:
        detail = "the run's deadline has passed or would pass while waiting; run again later"
        return self._give_up(trade_id, attempt, GiveUp("deferred", detail))

    async def _send_slot(self, trade_id: str, attempt: int) -> Failed | float:
        """Wait until this worker may send: no pause in force, and its paced slot reached.

        Returns the slot (the send time the pacer logged), or a failure instead
        when the wait would pass ``max_wait`` or the deadline. Nothing awaits
        between the last check and the send, so no request leaves while a pause
        is in force.
        """
        clock, gate, pacer = self._clock, self._gate, self.pacer
        while True:
            now = clock.monotonic()
            blocked = gate.wait_needed(now)
            if blocked > self._policy.max_wait:
                detail = (
                    f"batch paused for {blocked:.0f}s more, over max_wait "
                    f"{self._policy.max_wait:g}s; run again later"
                )
                return self._give_up(trade_id, attempt, GiveUp("deferred", detail))
            if self.past_deadline(now + blocked):
                return self._deadline_give_up(trade_id, attempt)
            if blocked > 0:
                await gate.wait_turn()
                resumed = clock.monotonic()
                paused = gate.take_resume(resumed)
                if paused is not None:
                    self._audit.emit("batch.resumed", paused_s=round(paused, 3))
                    self._pace(pacer.on_resume(resumed))
                continue
            slot = pacer.reserve(now)
            if slot is None:
                # Told to ask again; when a slot is due later (``pending_slot``), that
                # slot is the wait the deadline and max_wait are held to.
                wait = pacer.poll_delay(now)
                due = pacer.pending_slot
                if self.past_deadline(now + wait if due is None else due):
                    return self._deadline_give_up(trade_id, attempt)
                if due is not None and due - now > self._policy.max_wait:
                    return self._rate_give_up(trade_id, attempt, due - now)
                await clock.sleep(wait)
                continue
            if slot <= now:
                return slot
            if self.past_deadline(slot):
                pacer.cancel(slot)
                return self._deadline_give_up(trade_id, attempt)
            if slot - now > self._policy.max_wait:
                pacer.cancel(slot)
                return self._rate_give_up(trade_id, attempt, slot - now)
            reached = await self._sleep_to(slot, now)
            if reached is None:
                continue  # the slot no longer keeps to the window: ask again
            if gate.wait_needed(clock.monotonic()) <= 0:
                return reached
            pacer.cancel(reached)

    def _rate_give_up(self, trade_id: str, attempt: int, wait: float) -> Failed:
        detail = (
            f"the gateway's rate allows the next request in {wait:.0f}s, over "
            f"max_wait {self._policy.max_wait:g}s; run again later"
        )
        return self._give_up(trade_id, attempt, GiveUp("deferred", detail))

    async def _sleep_to(self, slot: float, now: float) -> float | None:
        """Sleep towards ``slot``, taking a sooner one if it opens; returns the slot reached,
        the one held when a pause begins, or None when it was given back (it no longer
        keeps to the window)."""
        clock, gate, pacer = self._clock, self._gate, self.pacer
        while now < slot:
            await clock.sleep(min(slot, now + SLOT_RECHECK) - now)
            now = clock.monotonic()
            if gate.wait_needed(now) > 0:
                break
            if not pacer.still_holds(slot):
                pacer.cancel(slot)
                return None
            if now >= slot:
                break
            sooner = pacer.sooner(now, slot)
            if sooner is not None:
                slot = sooner
        return slot

    def _pace(self, event: PacingEvent | None) -> None:
        if event is not None:
            self._audit.emit(event.name, **event.fields)

    def _pause_batch(
        self,
        trade_id: str,
        attempt: int,
        delay: float,
        source: str,
        *,
        spread: bool = True,
        **fields: object,
    ) -> None:
        if self._gate.pause(self._clock.monotonic(), delay, spread=spread):
            self._audit.emit(
                "batch.paused",
                trade_id=trade_id,
                attempt=attempt,
                pause_s=round(delay, 3),
                delay_source=source,
                **fields,
            )

    def budget_allows_retry(self) -> bool:
        return self._budget.allows()

    async def release(self, held: HeldBack) -> Fetched | Failed | HeldBack:
        """Take up a held-back trade where it stopped, its retry now in the budget."""
        self._budget.retries += 1
        self._stats.retries_by_cause[held.cause.value] += 1
        self._audit.emit(
            "trade.retry_released",
            trade_id=held.trade_id,
            attempt=held.attempts,
            cause=held.cause.value,
            retries=self._budget.retries,
            first_attempts=self._budget.first_attempts,
        )
        return await self.fetch(held.trade_id, attempts_made=held.attempts)

    def give_up_held(self, held: HeldBack) -> Failed:
        """A held-back trade's end when the budget will not grow enough: for the next run."""
        detail = (
            f"the batch's retry budget is spent ({self._budget.retries} retries); "
            "the gateway looks unhealthy, run again later"
        )
        decision = GiveUp("retry_budget_exhausted", detail)
        return self._give_up(held.trade_id, held.attempts, decision, held.status, held.error)

    async def fetch(self, trade_id: str, *, attempts_made: int = 0) -> Fetched | Failed | HeldBack:
        """Try ``trade_id`` until it is fetched, a ``GiveUp`` says stop, or its next retry
        waits for the retry budget (``HeldBack``); ``attempts_made``: before this call."""
        attempt = attempts_made
        clock, pacer = self._clock, self.pacer
        while True:
            slot = await self._send_slot(trade_id, attempt)
            if isinstance(slot, Failed):
                return slot
            attempt += 1
            if attempt == 1:
                self._budget.first_attempts += 1
            started, sent_wall = clock.monotonic(), clock.wall()
            pacer.sending(started, slot)
            try:
                result = await self._attempt(trade_id)
            finally:
                pacer.answered(started)
            self._observe(trade_id, attempt, result, started, sent_wall)
            if result.uncounted:
                pacer.cancel(slot)  # the quota it was logged against is still there
            if result.cause is None:
                self._audit.emit(
                    "trade.fetched", trade_id=trade_id, attempt=attempt, status=result.status
                )
                return Fetched(trade_id, result.body, attempt, clock.wall())
            decision = self._decide(attempt, result, started)
            if decision is None:
                return self._hold_back(trade_id, attempt, result)
            if isinstance(decision, GiveUp):
                return self._give_up(trade_id, attempt, decision, result.status, result.error)
            self._announce_retry(trade_id, attempt, result, decision)
            if decision.batch_wide:
                # The gateway's own time is when its quota is back: everyone
                # may go then. Our backoff's end is a guess: spread out.
                self._pause_batch(
                    trade_id,
                    attempt,
                    decision.delay,
                    decision.source,
                    spread=decision.source == "backoff",
                    cause=result.cause.value,
                    status=result.status,
                )
            elif self.past_deadline(clock.monotonic() + decision.delay):
                return self._deadline_give_up(trade_id, attempt)
            else:
                await self._back_off(decision.delay)

    async def _back_off(self, delay: float) -> None:
        """Wait out a trade's own backoff, or less once the gateway answers others well
        (``RetryPolicy.backoff_over``); looked at every ``HEALTH_POLL`` past the base."""
        clock, policy = self._clock, self._policy
        started, answered = clock.monotonic(), self._answered_well
        await clock.sleep(min(delay, policy.backoff_base))
        while True:
            elapsed = clock.monotonic() - started
            # (A microsecond short is float rounding of the sleeps, not a wait.)
            if policy.backoff_over(elapsed + 1e-6, delay, self._answered_well - answered):
                return
            await clock.sleep(min(delay - elapsed, HEALTH_POLL))

    def _observe(
        self, trade_id: str, attempt: int, result: _Attempt, started: float, sent_wall: float
    ) -> None:
        """Record an attempt, and let the pacer learn from its status and quota headers."""
        clock, pacer, stats = self._clock, self.pacer, self._stats
        now = clock.monotonic()
        latency = now - started
        stats.attempts += 1
        stats.latency.record(latency)
        if result.cause is Cause.POOL_TIMEOUT:
            stats.pool_timeouts += 1
        if result.status is not None:
            stats.responses_by_status[result.status] += 1
        self._audit.emit(
            "trade.attempt",
            trade_id=trade_id,
            attempt=attempt,
            outcome="ok" if result.cause is None else result.cause.value,
            status=result.status,
            latency_ms=round(latency * 1000, 3),
            **({"error": result.error} if result.error else {}),
        )
        if result.status is not None:
            wall = clock.wall()
            server_clock = self.server_clock.observe(result.headers.get("date"), sent_wall, wall)
            self.server_clock = server_clock
            quota = parse_quota(
                result.headers, wall, server_clock.earliest(wall), server_clock.spread
            )
            if quota is not None:
                throttled = result.cause is Cause.RATE_LIMITED
                learned, pause = pacer.on_quota(now, quota, started, throttled=throttled)
                self._pace(learned)
                if pause is not None:
                    # The quota comes back at the reset: the batch resumes together.
                    self._pause_batch(
                        trade_id,
                        attempt,
                        pause,
                        "quota_exhausted",
                        spread=throttled,
                        remaining=quota.remaining,
                    )
        if result.cause is Cause.RATE_LIMITED:
            return  # told to the pacer in _decide, with the pause the policy chose
        if result.status is not None and result.status < 400:
            self._answered_well += result.cause is None
            self._pace(pacer.on_success(now, started))
        else:
            pacer.on_response()

    def _decide(self, attempt: int, result: _Attempt, started: float) -> Retry | GiveUp | None:
        """The policy's decision, held to the batch's retry budget (None: a retry the budget
        cannot take yet)."""
        assert result.cause is not None  # noqa: S101 - only failed attempts get here
        hint = None
        if result.status:
            wall = self._clock.wall()
            hint = wait_hint(result.headers, wall, self.server_clock.earliest(wall))
        decision = decide(
            self._policy,
            attempt=attempt,
            cause=result.cause,
            status=result.status,
            hint=hint,
            rng=self._rng,
            throttle_streak=self.pacer.streak_with(started),
        )
        if result.cause is Cause.RATE_LIMITED:
            pause = decision.delay if isinstance(decision, Retry) else 0.0
            hinted = isinstance(decision, Retry) and decision.source != "backoff"
            now = self._clock.monotonic()
            self._pace(self.pacer.on_throttled(now, started, pause, hinted=hinted))
            if isinstance(decision, Retry) and decision.source == "backoff" and not decision.hint:
                # No hint at all: our own pause, which the pacer may know to be too long.
                pause = self.pacer.throttle_pause(decision.delay)
                decision = replace(decision, delay=pause)
        elif isinstance(decision, Retry):
            if not self._budget.allows():
                return None
            self._budget.retries += 1
        return decision

    def _hold_back(self, trade_id: str, attempt: int, result: _Attempt) -> HeldBack:
        assert result.cause is not None  # noqa: S101 - only failed attempts get here
        self._audit.emit(
            "trade.retry_held",
            trade_id=trade_id,
            attempt=attempt,
            cause=result.cause.value,
            status=result.status,
            retries=self._budget.retries,
            first_attempts=self._budget.first_attempts,
        )
        return HeldBack(trade_id, attempt, result.cause, result.status, result.error)

    def _announce_retry(
        self, trade_id: str, attempt: int, result: _Attempt, decision: Retry
    ) -> None:
        assert result.cause is not None  # noqa: S101 - only failed attempts get here
        self._stats.retries_by_cause[result.cause.value] += 1
        event: dict[str, object] = {
            "trade_id": trade_id,
            "attempt": attempt,
            "cause": result.cause.value,
            "status": result.status,
            "delay_s": round(decision.delay, 3),
            "delay_source": decision.source,
            "batch_wide": decision.batch_wide,
        }
        if decision.hint:
            event["hint"] = decision.hint
        unreadable = unreadable_hint(result.headers)
        if unreadable is not None:
            event["unreadable_retry_after"] = unreadable[:200]
        if result.cause is Cause.POOL_TIMEOUT:
            event["note"] = (
                "local connection pool exhausted: our own capacity, not gateway throttling"
            )
        self._audit.emit("trade.retry_scheduled", **event)

    def _give_up(
        self,
        trade_id: str,
        attempt: int,
        decision: GiveUp,
        status: int | None = None,
        cause_error: str = "",
    ) -> Failed:
        """Record a trade's end: ``decision``'s reason and detail, and the last attempt's
        status and error (``cause_error``), if it had one."""
        error = f"{decision.detail}: {cause_error}" if cause_error else decision.detail
        self._audit.emit(
            "trade.failed",
            trade_id=trade_id,
            attempt=attempt,
            reason=decision.reason,
            status=status,
            error=error,
        )
        return Failed(trade_id, decision.reason, status, attempt, error)
