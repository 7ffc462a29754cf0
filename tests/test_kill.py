"""Killed and resumed: a real ``trade-ingest run`` SIGKILL'd / SIGTERM'd at random moments.

The union of every run's results must hold each expected trade exactly once,
and the last run's failures must account for the rest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trade_ingest.simulator import GatewayConfig, SimulatedGateway

pytestmark = pytest.mark.integration

TRADES = [f"EEX-{n:04d}" for n in range(400)]
# Runs in the SIGKILL loop; raise it for a longer soak (e.g. KILL_LOOP_RUNS=60).
KILL_LOOP_RUNS = int(os.environ.get("KILL_LOOP_RUNS", "8"))
GATEWAY = GatewayConfig(
    latency_ms=12, latency_sigma=0.6, unknown_rate=0.03, error_rate=0.03, seed=7
)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def start_run(
    tmp_path: Path, base_url: str, run: int, rng: random.Random
) -> subprocess.Popen[bytes]:
    """One run over a freshly re-sorted input with some IDs repeated."""
    ids = TRADES + rng.sample(TRADES, 40)
    rng.shuffle(ids)
    (tmp_path / f"ids-{run}.txt").write_text("\n".join(ids) + "\n")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trade_ingest",
            "run",
            f"ids-{run}.txt",
            "--base-url",
            base_url,
            "-o",
            "trades.jsonl",
            "--failures",
            f"failed-{run}.jsonl",
            "--audit-log",
            "audit.jsonl",
            "-c",
            "8",
            "--max-attempts",
            "8",
            "-q",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(tmp_path: Path, base_url: str, run: int, rng: random.Random) -> int:
    """Resume until a run ends on its own; returns the number of that last run."""
    for last in range(run, run + 3):
        process = start_run(tmp_path, base_url, last, rng)
        _, stderr = process.communicate(timeout=120)
        assert b"Traceback" not in stderr
        if process.returncode in (0, 1):
            return last
    raise AssertionError("three resumed runs did not finish the batch")


def assert_exactly_once(tmp_path: Path, last_run: int) -> None:
    results = read_jsonl(tmp_path / "trades.jsonl")
    ingested = [r["trade_id"] for r in results]
    assert len(ingested) == len(set(ingested)), "a trade was written twice"
    failed = {f["trade_id"]: f["reason"] for f in read_jsonl(tmp_path / f"failed-{last_run}.jsonl")}
    assert set(failed.values()) <= {"http_404"}
    assert set(ingested) | set(failed) == set(TRADES)
    assert not set(ingested) & set(failed)


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Seeded kill loop: every trade ends up exactly once in the results, whatever was cut."""
    rng = random.Random(20261128)
    kills = 0
    with SimulatedGateway.in_thread(GATEWAY) as gateway:
        run = 0
        for run in range(KILL_LOOP_RUNS):
            process = start_run(tmp_path, gateway.base_url, run, rng)
            time.sleep(rng.uniform(0.3, 1.4))
            if process.poll() is None:
                process.kill()
                kills += 1
            process.communicate(timeout=60)
        last = finish(tmp_path, gateway.base_url, run + 1, rng)
    assert kills >= KILL_LOOP_RUNS // 2, "the loop should mostly kill runs mid-batch"
    assert_exactly_once(tmp_path, last)
    audit = read_jsonl(tmp_path / "audit.jsonl")
    torn = [e for e in audit if e["event"] == "file.torn_line_cut"]
    print(f"\nkill loop: {kills} SIGKILLs over {last + 1} runs, {len(torn)} torn lines cut")


def test_sigterm_loses_nothing_in_flight(tmp_path: Path) -> None:
    """SIGTERM: exit 143; every trade the run tried is a result or a recorded failure/pending."""
    rng = random.Random(7)
    terminated = 0
    with SimulatedGateway.in_thread(GATEWAY) as gateway:
        run = 0
        for run in range(3):
            before = gateway.stats.requests
            process = start_run(tmp_path, gateway.base_url, run, rng)
            # Signal once it is fetching: a SIGTERM during start-up (imports) gets
            # Python's default action, which the shell reports as 143 too.
            started = time.monotonic()
            while gateway.stats.requests == before and time.monotonic() - started < 30:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.6))
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
            assert b"Traceback" not in stderr
            if process.returncode != 143:
                assert process.returncode in (0, 1)  # it finished before the signal
                continue
            terminated += 1
            audit = read_jsonl(tmp_path / "audit.jsonl")
            batch = audit[-1]["batch_id"]
            assert audit[-1]["event"] == "batch.finished"
            assert audit[-1]["stop_reason"] == "terminated"
            tried = {
                e["trade_id"]
                for e in audit
                if e["batch_id"] == batch and e["event"] == "trade.attempt"
            }
            written = {r["trade_id"] for r in read_jsonl(tmp_path / "trades.jsonl")}
            recorded = {f["trade_id"] for f in read_jsonl(tmp_path / f"failed-{run}.jsonl")}
            assert tried <= written | recorded
            pending = sum(
                1 for f in read_jsonl(tmp_path / f"failed-{run}.jsonl") if f["reason"] == "pending"
            )
            assert pending == audit[-1]["pending"]
        last = finish(tmp_path, gateway.base_url, run + 1, rng)
    assert terminated >= 1
    assert_exactly_once(tmp_path, last)
