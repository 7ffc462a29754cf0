"""The per-trade shortcuts do what httpx and aiohttp would have done the long way."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import respx
import structlog
from hypothesis import given
from hypothesis import strategies as st

from trade_ingest.audit import (
    _BEARER,
    _URL_QUERY,
    _URL_USERINFO,
    REDACTED,
    AuditLog,
    ChainHead,
    CoreFields,
    HashChain,
    Redactor,
    _redact_credential,
    _redact_query,
    _redact_userinfo,
)
from trade_ingest.clock import FakeClock
from trade_ingest.config import Settings
from trade_ingest.fetch import USER_AGENT, TradeUrls, _ResponseHeaders, build_client, trade_path
from trade_ingest.policy import parse_quota
from trade_ingest.sinks import result_line, utc_rfc3339

BASES = [
    "http://gateway.test",
    "https://gateway.test:8443/api/v1",
    "https://gateway.test/api/v1/",
    "http://[::1]:8080/",
    "https://bücher.example/trades-api",
]


@given(trade_id=st.text(min_size=1, max_size=40), base=st.sampled_from(BASES))
def test_trade_url_is_the_url_httpx_merges(trade_id: str, base: str) -> None:
    """Any ID on any base URL: the ready-made URL is the one httpx builds from the path."""
    client = httpx.AsyncClient(base_url=base)
    expected = client.build_request("GET", trade_path(trade_id)).url
    made = client.build_request("GET", TradeUrls(client).url(trade_id)).url
    assert str(made) == str(expected)
    assert made.raw_path == expected.raw_path


@pytest.mark.parametrize("trade_id", [".", ".."])
def test_dot_ids_are_left_to_httpx(trade_id: str) -> None:
    """An ID of dots is a path segment httpx resolves: httpx builds that URL itself."""
    client = httpx.AsyncClient(base_url="http://gateway.test/api/")
    assert TradeUrls(client).url(trade_id) == trade_path(trade_id)


def test_base_url_with_a_query_is_left_to_httpx() -> None:
    """A base URL with a query merges oddly in httpx: that merge is kept, not imitated."""
    client = httpx.AsyncClient(base_url="http://gateway.test/api/?key=1")
    assert TradeUrls(client).url("T1") == trade_path("T1")


def test_response_headers_read_like_httpx_headers() -> None:
    """Any case finds a name; a repeated field reads as httpx joins it."""
    raw = httpx.Headers([("Date", "x"), ("X-RateLimit-Remaining", "3"), ("Via", "a"), ("via", "b")])
    mapped = _ResponseHeaders(raw)
    for name in ("date", "DATE", "x-ratelimit-remaining", "Via", "absent"):
        assert mapped.get(name) == raw.get(name)
        assert mapped.get(name, "-") == raw.get(name, "-")
        assert (name in mapped) == (name in raw)
    assert dict(mapped) == dict(raw)
    assert parse_quota(mapped, 0.0, 0.0) == parse_quota(raw, 0.0, 0.0)


@pytest.mark.anyio
async def test_cookies_a_gateway_sets_are_sent_back() -> None:
    """Responses without Set-Cookie are skipped; a cookie that is set still comes back."""
    settings = Settings(base_url="http://gateway.test", http_transport="httpcore")
    async with build_client(settings, None) as client:
        with respx.mock(base_url="http://gateway.test") as mock:
            route = mock.get("/trades/T1").mock(
                side_effect=[
                    httpx.Response(200, json={}),
                    httpx.Response(200, json={}, headers={"Set-Cookie": "lb=node-2; Path=/"}),
                    httpx.Response(200, json={}),
                ]
            )
            for _ in range(3):
                await client.get("/trades/T1")
        sent = [call.request.headers.get("cookie") for call in route.calls]
    assert sent == [None, None, "lb=node-2"]


@asynccontextmanager
async def _recording_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback server that answers 200 {} and keeps every request head it read."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()


def _fields(head: bytes) -> list[tuple[str, str]]:
    """The head's fields, lower-case names, sorted; not Host (each server has its port)."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = [line.split(":", 1) for line in lines if line]
    fields = ((name.strip().lower(), value.strip()) for name, value in pairs)
    return sorted(field for field in fields if field[0] != "host")


@pytest.mark.anyio
async def test_aiohttp_sends_the_headers_httpcore_sends() -> None:
    """Same header fields on the wire from both transports; none of aiohttp's own added,
    also when the request removed one httpx would send (no Accept-Encoding)."""
    heads_by_transport = {}
    for transport in ("httpcore", "aiohttp"):
        async with _recording_server() as (base_url, heads):
            settings = Settings(base_url=base_url, http_transport=transport)
            async with build_client(settings, "s3cret") as client:
                await client.get("/trades/T1", headers={"Idempotency-Key": "k"})
                request = client.build_request("GET", "/trades/T2")
                del request.headers["Accept-Encoding"]
                await client.send(request)
            heads_by_transport[transport] = [_fields(head) for head in heads]
    assert heads_by_transport["aiohttp"] == heads_by_transport["httpcore"]
    first, second = heads_by_transport["aiohttp"]
    assert ("user-agent", USER_AGENT) in first
    assert ("idempotency-key", "k") in first
    assert ("authorization", "Bearer s3cret") in first
    assert "accept-encoding" not in dict(second)


@given(
    trade_id=st.text(st.characters(blacklist_categories=())),
    batch_id=st.text(),
    fetched_at=st.floats(0, 4e9),
    attempts=st.integers(1, 100),
)
def test_result_line_is_what_json_dumps_writes(
    trade_id: str, batch_id: str, fetched_at: float, attempts: int
) -> None:
    """The result line built by hand is byte for byte the json.dumps form it replaced."""
    head = json.dumps(
        {
            "trade_id": trade_id,
            "batch_id": batch_id,
            "fetched_at": utc_rfc3339(fetched_at, digits=3),
            "attempts": attempts,
        },
        separators=(",", ":"),
    )
    expected = (head[:-1] + ',"trade":{"price":"84.35"}}\n').encode()
    assert result_line(trade_id, batch_id, fetched_at, attempts, '{"price":"84.35"}') == expected


def _scrub_by_every_pattern(text: str, secrets: list[str]) -> str:
    """The redaction of text with no shortcut: every substitution run on every value."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _BEARER.sub(_redact_credential, text)
    text = _URL_QUERY.sub(_redact_query, text)
    return _URL_USERINFO.sub(_redact_userinfo, text)


_REDACTION_PIECES = st.sampled_from(
    ["Bearer", "bearer", "Token", "basic", " ", "\t", "\u2003", "\n", "://", "https", "@",
     "?", "=", "&", "k-99", "s3cret", "a", "B", "-", ".", "/", "é"]
)  # fmt: skip


@given(
    text=st.lists(_REDACTION_PIECES | st.text(max_size=3), max_size=12).map("".join),
    secrets=st.sampled_from([[], ["s3cret"], ["s3cret", "k-99"]]),
)
def test_redaction_shortcut_changes_nothing(text: str, secrets: list[str]) -> None:
    """Values the shortcut passes (no whitespace, no ``://``) are those no pattern changes:
    field by field and as plain text, with and without known secrets."""
    expected = _scrub_by_every_pattern(text, secrets)
    redactor = Redactor(secrets)
    assert redactor.scrub(text) == expected
    as_field = redactor(None, "info", {"error": text, "attempt": 1})
    assert as_field == {"error": expected, "attempt": 1}


def test_audit_lines_are_what_structlog_writes_with_the_same_processors() -> None:
    """The lines are those of structlog's own logger with the same processors, whatever
    path emit takes to them."""
    events: list[tuple[str, dict[str, object]]] = [
        ("batch.started", {"settings": {"token": "s3cret", "concurrency": 4}}),
        ("trade.attempt", {"trade_id": "T1", "attempt": 1, "outcome": "ok", "latency_ms": 1.5}),
        ("trade.failed", {"trade_id": "T2", "error": "Bearer s3cret at https://u:p@h/?k=v"}),
        ("odd.keys", {"mapping": {1: "a", "b": [("Authorization", "x")]}}),
    ]
    clock = FakeClock()
    stream = io.StringIO()
    audit = AuditLog(stream, "B1", clock, ["s3cret"], key=b"k")
    for event, fields in events:
        audit.emit(event, **fields)

    class Lines:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, line: str) -> None:
            self.lines.append(line)

    lines = Lines()
    logger = structlog.wrap_logger(
        lines,
        processors=[CoreFields("B1", clock), Redactor(["s3cret"]), HashChain(ChainHead(), b"k")],
        wrapper_class=structlog.BoundLogger,
        context_class=dict,
    )
    for event, fields in events:
        logger.info(event, **fields)
    assert stream.getvalue().splitlines() == lines.lines
