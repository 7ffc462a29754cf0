"""The simulated exchange gateway: asyncio streams + h11 on loopback.

h11 rather than an ASGI server: no extra dependency (httpx brings h11), and
the raw socket is ours, so faults such as closing before answering are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import math
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote

import h11

from trade_ingest.simulator.limits import Admission, LimiterKind, RateLimiter, make_limiter
from trade_ingest.simulator.trades import is_unknown, render_trade_body

RetryAfterStyle = Literal["seconds", "http-date", "none"]
LimitHeaders = Literal["delta", "epoch", "ietf", "none"]
_SERVER_ERRORS = (500, 502, 503)
# Turns of the event loop an accepted connection takes to reach its handler.
_ACCEPT_TURNS = 5


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the simulated gateway behaves; every fault is off by default.

    ``limit_headers``: ``delta``/``epoch`` send X-RateLimit-Limit/Remaining/Reset
    with the reset as seconds from now or as epoch seconds; ``ietf`` sends the
    IETF ``RateLimit-Policy`` and ``RateLimit`` fields; ``none`` sends neither.
    ``penalty``: a request that arrives while a Retry-After is in force is
    refused and restarts the penalty (a full window), as ENTSO-E-style
    gateways do. ``clock_offset``: seconds the server's wall clock is ahead of
    the client's (its ``Date`` header tells the truth about it). Latency is
    log-normal around ``latency_ms`` with shape ``latency_sigma``. Server
    errors come in runs of ``error_burst`` requests, starting at ``error_rate``.
    ``window_phase``: a fixed window's first turn comes this share of a window
    after the first request (None: windows turn at multiples of ``window`` on
    the server's wall clock, as most gateways count them, so an epoch reset
    names a turn exactly).
    """

    host: str = "127.0.0.1"
    port: int = 0
    limiter: LimiterKind = "fixed"
    rate_limit: int | None = None
    window: float = 1.0
    burst: int | None = None
    window_phase: float | None = None
    retry_after: RetryAfterStyle = "seconds"
    limit_headers: LimitHeaders = "delta"
    penalty: bool = False
    clock_offset: float = 0.0
    latency_ms: float = 0.0
    latency_sigma: float = 0.0
    error_rate: float = 0.0
    error_burst: int = 1
    drop_rate: float = 0.0
    unknown_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.limiter not in ("fixed", "sliding", "token"):
            raise ValueError("limiter must be fixed, sliding or token")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 request per window")
        if not 0 < self.window < math.inf:
            raise ValueError("window must be a positive number of seconds")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.window_phase is not None and not 0 < self.window_phase <= 1:
            raise ValueError("window_phase must be above 0 and at most 1 (a share of the window)")
        if self.retry_after not in ("seconds", "http-date", "none"):
            raise ValueError("retry_after must be seconds, http-date or none")
        if self.limit_headers not in ("delta", "epoch", "ietf", "none"):
            raise ValueError("limit_headers must be delta, epoch, ietf or none")
        if not 0 <= self.latency_ms < math.inf or not 0 <= self.latency_sigma <= 3:
            raise ValueError("latency_ms must be >= 0 and latency_sigma between 0 and 3")
        for name in ("error_rate", "drop_rate", "unknown_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_burst < 1:
            raise ValueError("error_burst must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if not math.isfinite(self.clock_offset):
            raise ValueError("clock_offset must be a finite number of seconds")


@dataclass
class GatewayStats:
    """What the gateway saw; tests assert on it, benchmarks read it from ``/_stats``."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    # Connections accepted: keep-alive clients open few, naive clients one per request.
    connections: int = 0
    per_trade: Counter[str] = field(default_factory=Counter)
    # In answer order, repeats included: a client that retries too early shows up twice.
    rate_limited_ids: list[str] = field(default_factory=list)
    # Requests that arrived while a Retry-After the server had announced was in force.
    during_retry_after: int = 0
    penalties: int = 0
    # Monotonic times of the first trade request and the last answer: the span
    # in which the gateway was busy with the batch.
    first_request_at: float | None = None
    last_answer_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """The stats as JSON-able values; per-trade detail is summarised to stay small."""
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "dropped": self.dropped,
            "connections": self.connections,
            "distinct_trades": len(self.per_trade),
            "repeated_trades": sum(1 for n in self.per_trade.values() if n > 1),
            "rate_limited_trades": len(set(self.rate_limited_ids)),
            "during_retry_after": self.during_retry_after,
            "penalties": self.penalties,
            "busy_seconds": (
                round(self.last_answer_at - self.first_request_at, 4)
                if self.first_request_at is not None and self.last_answer_at is not None
                else 0.0
            ),
        }


def _whole_seconds(seconds: float) -> int:
    """``seconds`` rounded up to a whole second, as gateways tell a wait; a window's end
    computed as ``start + window - now`` may come out a hair over it (float rounding)."""
    return math.ceil(round(seconds, 9))


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class SimulatedGateway:
    """``GET /trades/{id}`` with a rate limit, latency and faults, on a real socket."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock_monotonic: Callable[[], float] = time.monotonic,
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats = GatewayStats()
        self._monotonic = clock_monotonic
        self._clock_wall = clock_wall
        self._rng = random.Random(config.seed)
        # The limiter counts on the monotonic clock; its windows turn where the
        # server's wall clock passes a multiple of the window.
        origin = -(self._wall() - clock_monotonic()) % config.window
        self._limiter: RateLimiter | None = (
            make_limiter(
                config.limiter,
                config.rate_limit,
                config.window,
                config.burst,
                config.window_phase,
                origin,
            )
            if config.rate_limit
            else None
        )
        # Until when (monotonic) the server has told a client to stay away.
        self._blocked_until = -math.inf
        self._errors_left = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    def _wall(self) -> float:
        """The server's own wall clock, ``clock_offset`` ahead of the real one."""
        return self._clock_wall() + self.config.clock_offset

    @property
    def base_url(self) -> str:
        """``http://host:port`` once started (the port is the bound one, never 0)."""
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start accepting; ``port`` is known when this returns."""
        self._server = await asyncio.start_server(
            self._serve_connection, self.config.host, self.config.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting and cut every open connection, mid-request or idle."""
        if self._server is not None:
            self._server.close()
        while True:
            # A connection accepted just before the close reaches its handler, which
            # registers it, a few turns of the loop later: not waited for, it could be
            # left open.
            for _ in range(_ACCEPT_TURNS):
                await asyncio.sleep(0)
            if not self._connections:
                break
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimulatedGateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls,
        config: GatewayConfig,
        *,
        clock_monotonic: Callable[[], float] = time.monotonic,
        clock_wall: Callable[[], float] = time.time,
    ) -> Iterator[SimulatedGateway]:
        """The gateway on its own event loop in a daemon thread, for synchronous callers.

        Yields the started gateway; on exit stops it and joins the thread, after
        which ``stats`` no longer changes and is safe to read.
        """
        loop = asyncio.new_event_loop()
        gateway = cls(config, clock_monotonic=clock_monotonic, clock_wall=clock_wall)
        thread = threading.Thread(target=loop.run_forever, name="simulated-gateway", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(timeout=10)
            yield gateway
        finally:
            try:
                asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                loop.close()

    # -- HTTP -----------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task here
        self._connections.add(task)
        self.stats.connections += 1
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_event(connection, reader)
                if not isinstance(event, h11.Request):
                    return
                while not isinstance(
                    end := await self._next_event(connection, reader), h11.EndOfMessage
                ):
                    if isinstance(end, h11.ConnectionClosed):
                        return
                if not await self._respond(connection, writer, event):
                    return
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()
        except h11.RemoteProtocolError:
            with contextlib.suppress(Exception):
                await self._send(connection, writer, 400, _json({"error": "bad request"}), [])
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(await reader.read(65536))

    async def _send(
        self,
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]],
    ) -> None:
        headers = [
            ("Date", formatdate(self._wall(), usegmt=True)),
            ("Server", "trade-ingest-simulator"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *extra,
        ]
        # h11 sends an empty reason phrase unless given one; real gateways do not.
        reason = http.HTTPStatus(status).phrase.encode()
        response = h11.Response(status_code=status, headers=headers, reason=reason)
        writer.write(connection.send(response) or b"")
        writer.write(connection.send(h11.Data(data=body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        self.stats.last_answer_at = self._monotonic()
        await writer.drain()

    def _limit_headers(self, admission: Admission, now: float) -> list[tuple[str, str]]:
        """The quota headers for ``admission``, made at monotonic ``now``."""
        style = self.config.limit_headers
        if style == "none" or self._limiter is None:
            return []
        reset_after = _whole_seconds(admission.reset_after)
        if style == "ietf":
            window = self._limiter.window
            w = str(int(window)) if float(window).is_integer() else f"{window:.3f}"
            return [
                ("RateLimit-Policy", f'"default";q={admission.limit};w={w}'),
                ("RateLimit", f'"default";r={admission.remaining};t={reset_after}'),
            ]
        if style == "epoch":
            # On the wall clock as it read at the admission, to the millisecond: a
            # turn on a whole second must not read as the next one.
            at = self._wall() - self._monotonic() + now + admission.reset_after
            reset = str(math.ceil(round(at, 3)))
        else:
            reset = str(reset_after)
        return [
            ("X-RateLimit-Limit", str(admission.limit)),
            ("X-RateLimit-Remaining", str(admission.remaining)),
            ("X-RateLimit-Reset", reset),
        ]

    def _retry_after(self, seconds: float) -> list[tuple[str, str]]:
        if self.config.retry_after == "seconds":
            return [("Retry-After", str(max(1, _whole_seconds(seconds))))]
        if self.config.retry_after == "http-date":
            when = math.ceil(self._wall() + seconds)
            return [("Retry-After", formatdate(when, usegmt=True))]
        return []

    def _admit(self, now: float) -> tuple[Admission, float] | None:
        """The limiter's answer, with the Retry-After to announce when refused."""
        if self._limiter is None:
            return None
        if now < self._blocked_until:
            self.stats.during_retry_after += 1
            if self.config.penalty:
                # Knocking during the penalty restarts it; the limiter is not consulted.
                self.stats.penalties += 1
                self._blocked_until = now + self._limiter.window
                wait = self._blocked_until - now
                return Admission(False, self._limiter.limit, 0, wait), wait
        admission = self._limiter.admit(now)
        if admission.allowed:
            return admission, 0.0
        # What a client is told is what counts: Retry-After is rounded up to a second.
        told = admission.reset_after
        if self.config.retry_after != "none":
            told = max(1.0, _whole_seconds(admission.reset_after))
        self._blocked_until = max(self._blocked_until, now + told)
        return admission, told

    async def _respond(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request
    ) -> bool:
        """Answer one request; False when the connection was dropped on purpose."""
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        if path == "/_stats":
            await self._send(connection, writer, 200, _json(self.stats.snapshot()), [])
            return True
        config, rng = self.config, self._rng
        self.stats.requests += 1
        if self.stats.first_request_at is None:
            self.stats.first_request_at = self._monotonic()
        segments = path.split("/")
        if len(segments) != 3 or segments[1] != "trades" or not segments[2]:
            return await self._answer(connection, writer, 404, {"error": "no such resource"}, [])
        if request.method != b"GET":
            return await self._answer(
                connection, writer, 405, {"error": "GET only"}, [("Allow", "GET")]
            )
        # Split first, then decode: %2F stays inside one trade ID.
        trade_id = unquote(segments[2], errors="surrogateescape")
        self.stats.per_trade[trade_id] += 1
        if config.drop_rate and rng.random() < config.drop_rate:
            self.stats.dropped += 1
            return False
        extra: list[tuple[str, str]] = []
        now = self._monotonic()
        answer = self._admit(now)
        if answer is not None:
            admission, wait = answer
            extra = self._limit_headers(admission, now)
            if not admission.allowed:
                extra += self._retry_after(wait)
                self.stats.rate_limited_ids.append(trade_id)
                body = {"error": "rate limit exceeded", "trade_id": trade_id}
                return await self._answer(connection, writer, 429, body, extra)
        if config.latency_ms > 0:
            delay = config.latency_ms / 1000
            if config.latency_sigma > 0:
                delay *= math.exp(rng.gauss(0.0, config.latency_sigma))
            await asyncio.sleep(min(delay, 30.0))
        if self._errors_left == 0 and config.error_rate and rng.random() < config.error_rate:
            self._errors_left = config.error_burst
        if self._errors_left:
            self._errors_left -= 1
            status = rng.choice(_SERVER_ERRORS)
            return await self._answer(connection, writer, status, {"error": "upstream"}, extra)
        if is_unknown(trade_id, config.unknown_rate):
            body = {"error": "unknown trade", "trade_id": trade_id}
            return await self._answer(connection, writer, 404, body, extra)
        self.stats.by_status[200] += 1
        await self._send(connection, writer, 200, render_trade_body(trade_id), extra)
        return True

    async def _answer(
        self,
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: dict[str, Any],
        extra: list[tuple[str, str]],
    ) -> bool:
        self.stats.by_status[status] += 1
        await self._send(connection, writer, status, _json(body), extra)
        return True


def run_forever(config: GatewayConfig, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (no traceback on Ctrl-C)."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with SimulatedGateway(config) as gateway:
            on_ready(gateway.base_url)
            await stop.wait()

    asyncio.run(serve())
