"""The simulated exchange gateway: asyncio streams + h11 on loopback.

h11 rather than an ASGI server: no extra dependency (httpx brings h11), and
the raw socket is ours, so faults such as closing before answering are real.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from trade_ingest.simulator.limits import Admission, FixedWindowLimiter, RateLimiter
from trade_ingest.simulator.trades import is_unknown, render_trade_body

RetryAfterStyle = Literal["seconds", "http-date", "none"]
ResetStyle = Literal["delta", "epoch", "none"]
_SERVER_ERRORS = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the simulated gateway behaves; every fault is off by default."""

    host: str = "127.0.0.1"
    port: int = 0
    rate_limit: int | None = None
    window: float = 1.0
    retry_after: RetryAfterStyle = "seconds"
    reset_style: ResetStyle = "delta"
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    unknown_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 request per window")
        if not 0 < self.window < math.inf:
            raise ValueError("window must be a positive number of seconds")
        if self.retry_after not in ("seconds", "http-date", "none"):
            raise ValueError("retry_after must be seconds, http-date or none")
        if self.reset_style not in ("delta", "epoch", "none"):
            raise ValueError("reset_style must be delta, epoch or none")
        if not 0 <= self.latency_min_ms <= self.latency_max_ms:
            raise ValueError("latency must satisfy 0 <= latency_min_ms <= latency_max_ms")
        for name in ("error_rate", "drop_rate", "unknown_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")


@dataclass
class GatewayStats:
    """What the gateway saw; tests assert on it, benchmarks read it from ``/_stats``."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    per_trade: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "dropped": self.dropped,
            "distinct_trades": len(self.per_trade),
            "repeated_trades": sum(1 for n in self.per_trade.values() if n > 1),
        }


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
        self._wall = clock_wall
        self._rng = random.Random(config.seed)
        self._limiter: RateLimiter | None = (
            FixedWindowLimiter(config.rate_limit, config.window) if config.rate_limit else None
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.config.host, self.config.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
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
    def in_thread(cls, config: GatewayConfig) -> Iterator[SimulatedGateway]:
        """The gateway on its own event loop in a daemon thread, for synchronous callers."""
        loop = asyncio.new_event_loop()
        gateway = cls(config)
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
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(connection.send(h11.Data(data=body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    def _limit_headers(self, admission: Admission) -> list[tuple[str, str]]:
        if self.config.reset_style == "none":
            return []
        reset_after = math.ceil(admission.reset_after)
        if self.config.reset_style == "epoch":
            reset = str(math.ceil(self._wall() + admission.reset_after))
        else:
            reset = str(reset_after)
        return [
            ("X-RateLimit-Limit", str(admission.limit)),
            ("X-RateLimit-Remaining", str(admission.remaining)),
            ("X-RateLimit-Reset", reset),
        ]

    def _retry_after(self, admission: Admission) -> list[tuple[str, str]]:
        if self.config.retry_after == "seconds":
            return [("Retry-After", str(max(1, math.ceil(admission.reset_after))))]
        if self.config.retry_after == "http-date":
            when = math.ceil(self._wall() + admission.reset_after)
            return [("Retry-After", formatdate(when, usegmt=True))]
        return []

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
        segments = path.split("/")
        if len(segments) != 3 or segments[1] != "trades" or not segments[2]:
            return await self._answer(connection, writer, 404, {"error": "no such resource"}, [])
        trade_id = unquote(segments[2], errors="surrogateescape")
        self.stats.per_trade[trade_id] += 1
        if request.method != b"GET":
            return await self._answer(connection, writer, 405, {"error": "GET only"}, [])
        if config.drop_rate and rng.random() < config.drop_rate:
            self.stats.dropped += 1
            return False
        extra: list[tuple[str, str]] = []
        if self._limiter is not None:
            admission = self._limiter.admit(self._monotonic())
            extra = self._limit_headers(admission)
            if not admission.allowed:
                extra += self._retry_after(admission)
                body = {"error": "rate limit exceeded", "trade_id": trade_id}
                return await self._answer(connection, writer, 429, body, extra)
        if config.latency_max_ms > 0:
            await asyncio.sleep(rng.uniform(config.latency_min_ms, config.latency_max_ms) / 1000)
        if config.error_rate and rng.random() < config.error_rate:
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
