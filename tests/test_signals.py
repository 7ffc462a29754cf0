"""A real ``trade-ingest run`` process stopped by SIGTERM / SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trade_ingest.simulator import GatewayConfig, SimulatedGateway

pytestmark = pytest.mark.integration


def _wait_for_lines(path: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout}s")


@pytest.mark.parametrize(
    ("signum", "code", "reason"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_signal_stops_cleanly(
    tmp_path: Path, signum: signal.Signals, code: int, reason: str
) -> None:
    """In-flight trades finish, nothing is torn or doubled, the exit code says which signal."""
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"T{n}" for n in range(400)) + "\n")
    out = tmp_path / "out.jsonl"
    audit = tmp_path / "audit.jsonl"
    config = GatewayConfig(latency_ms=50)
    with SimulatedGateway.in_thread(config) as gateway:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trade_ingest",
                "run",
                str(ids),
                "--base-url",
                gateway.base_url,
                "-o",
                str(out),
                "--audit-log",
                str(audit),
                "-c",
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for_lines(out, 5, timeout=20)
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == code
    assert b"Traceback" not in stderr
    lines = out.read_bytes().splitlines()
    trade_ids = [json.loads(line)["trade_id"] for line in lines]
    assert len(trade_ids) == len(set(trade_ids))
    assert 5 <= len(trade_ids) < 400
    finished = json.loads(audit.read_text().splitlines()[-1])
    assert finished["event"] == "batch.finished"
    assert finished["stop_reason"] == reason
    assert finished["ingested"] == len(trade_ids)
    fetched = sum(1 for line in audit.read_text().splitlines() if '"event":"trade.fetched"' in line)
    assert fetched == len(trade_ids)
