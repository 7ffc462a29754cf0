"""Secrets never reach the audit log, the failures file or the summary, wherever they hide."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from trade_ingest.audit import REDACTED, Redactor
from trade_ingest.config import Settings
from trade_ingest.pipeline import Job, run_job
from trade_ingest.summary import render_summary

TOKEN = "tok-9f8e7d6c5b4a-SECRET"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Authorization": "Bearer abc"}, {"Authorization": REDACTED}),
        ({"headers": {"X-Api-Key": "k-123"}}, {"headers": {"X-Api-Key": REDACTED}}),
        (
            {"client_secret": "s", "gateway_token": "t"},
            {"client_secret": REDACTED, "gateway_token": REDACTED},
        ),
        ({"token_env": "TRADE_INGEST_TOKEN"}, {"token_env": "TRADE_INGEST_TOKEN"}),
        ([("authorization", "Basic dXNlcjpwYXNz")], [["authorization", REDACTED]]),
        ("sent Authorization: Bearer eyJhbGciOi.abc.def", "sent Authorization: Bearer ***"),
        ("proxy said token abcdef123456", "proxy said token ***"),
        ("https://user:pw@gw.example/trades/T1", "https://***@gw.example/trades/T1"),
        (
            "GET https://gw.example/trades/T1?api_key=k-99&x=1 failed",
            "GET https://gw.example/trades/T1?api_key=***&x=*** failed",
        ),
        (
            "ConnectError: [Errno 111] for url 'http://a:b@127.0.0.1:9/trades/T1?sig=zz'",
            "ConnectError: [Errno 111] for url 'http://***@127.0.0.1:9/trades/T1?sig=***'",
        ),
        (f"echoed {TOKEN} back", f"echoed {REDACTED} back"),
        ("T1 fetched in 40ms", "T1 fetched in 40ms"),
    ],
)
def test_redactor(value: Any, expected: Any) -> None:
    """By key name, header pair, bearer pattern, URL credentials and query, and known value."""
    assert Redactor([TOKEN]).scrub(value) == expected


def test_redactor_as_a_processor_scrubs_exception_text() -> None:
    """The structlog processor cleans every field, exception text included."""
    try:
        raise httpx.ConnectError(f"cannot reach https://svc:{TOKEN}@gw.example/x?token={TOKEN}")
    except httpx.ConnectError as exc:
        event = {
            "event": "trade.attempt",
            "error": f"{type(exc).__name__}: {exc}",
            "exception": repr(exc),
        }
    cleaned = Redactor([TOKEN])(None, "info", event)
    assert TOKEN not in json.dumps(cleaned)
    assert "gw.example" in cleaned["error"]


class _Reflector(BaseHTTPRequestHandler):
    """A hostile gateway that echoes the caller's credentials wherever it can."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        trade_id = self.path.rsplit("/", 1)[-1]
        if trade_id.startswith("RA"):
            self.send_response(429)
            self.send_header("Retry-After", f"later, {auth}")
            body = b"{}"
        elif trade_id.startswith("BAD"):
            self.send_response(400)
            body = json.dumps({"error": f"bad credentials {auth}"}).encode()
        else:
            self.send_response(200)
            body = json.dumps({"trade_id": auth, "price": "1"}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def reflector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reflector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_reflected_token_never_written(tmp_path: Path, reflector: str) -> None:
    """Token echoed in bodies, a Retry-After and an error: absent from every file we write."""
    ids = tmp_path / "ids.txt"
    ids.write_text("T1\nRA1\nBAD1\n")
    job = Job(
        settings=Settings(base_url=reflector, max_attempts=2, backoff_base=0.01, max_wait=5),
        input_path=ids,
        output_path=tmp_path / "trades.jsonl",
        failures_path=tmp_path / "failed.jsonl",
        audit_path=tmp_path / "audit.jsonl",
        batch_id="B1",
    )
    report = run_job(job, env={"TRADE_INGEST_TOKEN": TOKEN})
    assert report.stats.failed + report.stats.deferred == 3
    written = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    written += "\n".join(render_summary(report))
    assert TOKEN not in written
    assert "unreadable_retry_after" in (tmp_path / "audit.jsonl").read_text()
