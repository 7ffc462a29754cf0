"""TLS is verified (a private CA via ``ca_bundle``), proxies follow ``trust_env``, and
hostile IDs never change the request path or split an audit line."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trade_ingest.config import Settings
from trade_ingest.errors import ConfigError, ExitCode
from trade_ingest.fetch import build_client
from trade_ingest.pipeline import Job, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway
from trade_ingest.transport import AiohttpTransport

pytestmark = pytest.mark.integration


class _Trades(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"trade_id": self.path.rsplit("/", 1)[-1], "price": "1.5"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate from a throw-away CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trades)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def _job(tmp_path: Path, settings: Settings, ids: list[str]) -> Job:
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    return Job(
        settings=settings,
        input_path=tmp_path / "ids.txt",
        output_path=tmp_path / "trades.jsonl",
        failures_path=tmp_path / "failed.jsonl",
        audit_path=tmp_path / "audit.jsonl",
        batch_id="B1",
    )


def test_unknown_ca_is_refused_and_ca_bundle_trusts_it(
    tmp_path: Path, tls_gateway: tuple[str, Path]
) -> None:
    """Verification is on: a private CA fails as connect_error until ca_bundle names it."""
    url, cert = tls_gateway
    strict = Settings(base_url=url, max_attempts=1, trust_env=False)
    (tmp_path / "a").mkdir()
    refused = run_job(_job(tmp_path / "a", strict, ["T1"]), env={})
    failure = json.loads((tmp_path / "a" / "failed.jsonl").read_text())
    assert refused.exit_code == ExitCode.TRADES_FAILED
    assert "connect_error" in failure["error"] and "CERTIFICATE_VERIFY_FAILED" in failure["error"]
    (tmp_path / "b").mkdir()
    trusted = Settings(base_url=url, ca_bundle=str(cert), trust_env=False)
    report = run_job(_job(tmp_path / "b", trusted, ["T1"]), env={})
    assert report.exit_code == ExitCode.OK


def test_a_bad_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """Not PEM: exit 78 before any output file is created."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    settings = Settings(base_url="https://127.0.0.1:9", ca_bundle=str(bundle))
    with pytest.raises(ConfigError, match="ca_bundle"):
        run_job(_job(tmp_path, settings, ["T1"]), env={})
    assert not (tmp_path / "audit.jsonl").exists()


@pytest.mark.anyio
async def test_trust_env_decides_whether_proxy_variables_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY is used with trust_env (the default) and ignored without it."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = "https://gateway.example"
    httpcore = Settings(base_url=url, http_transport="httpcore")
    async with build_client(httpcore, None) as client:
        assert client._transport_for_url(client._merge_url(url)) is not client._transport
    async with build_client(replace(httpcore, trust_env=False), None) as client:
        assert client._transport_for_url(client._merge_url(url)) is client._transport
    async with build_client(Settings(base_url=url, http_transport="aiohttp"), None) as client:
        assert isinstance(client._transport, AiohttpTransport)
        assert client._transport._proxy == "http://127.0.0.1:3128"
    async with build_client(Settings(base_url=url, trust_env=False), None) as client:
        assert isinstance(client._transport, AiohttpTransport)
        assert client._transport._proxy is None


HOSTILE_IDS = [
    "../admin",
    "..",
    "a/b?x=1",
    "x#frag",
    "%2e%2e",
    "nul\x00byte",
    "line\u2028sep",
    "tab\there",
    "é" * 10_000,
    "EEX-1",
    "EEX-2",
]


def test_hostile_ids_never_reach_the_path_nor_split_a_line(tmp_path: Path) -> None:
    """Path traversal, query, fragment, encoded dots, NUL, U+2028 and a 10,000-character ID:
    only plausible IDs are requested, each line of every file is one JSON record."""
    with SimulatedGateway.in_thread(GatewayConfig()) as gateway:
        job = _job(tmp_path, Settings(base_url=gateway.base_url), HOSTILE_IDS)
        report = run_job(job, env={})
        requested = set(gateway.stats.per_trade)
    assert requested == {"EEX-1", "EEX-2"}
    for name in ("trades.jsonl", "failed.jsonl", "audit.jsonl"):
        for line in (tmp_path / name).read_text(encoding="utf-8").split("\n")[:-1]:
            json.loads(line)
    invalid = [json.loads(x) for x in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert {f["reason"] for f in invalid} == {"invalid_id"}
    assert len(invalid) == len(HOSTILE_IDS) - 2
    assert report.stats.invalid == len(HOSTILE_IDS) - 2
