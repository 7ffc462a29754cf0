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
from dataclasses import replace
from pathlib import Path

import pytest

from trade_ingest.simulator import GatewayConfig, SimulatedGateway
from trade_ingest.verify import verify_audit, verify_results

pytestmark = pytest.mark.integration

TRADES = [f"EEX-{n:04d}" for n in range(400)]
# SIGKILLs the kill loop delivers; raise it for a longer soak (e.g. KILL_LOOP_KILLS=200).
KILLS = int(os.environ.get("KILL_LOOP_KILLS", "8"))
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
    # The audit chain survived every kill, and it accounts for every result line.
    with (tmp_path / "audit.jsonl").open("rb") as log:
        verdict = verify_audit(log, name="audit.jsonl")
    with (tmp_path / "trades.jsonl").open("rb") as results:
        verify_results(verdict, results, name="trades.jsonl")
    assert verdict.ok, verdict.errors


def _kill_at_a_random_moment(
    process: subprocess.Popen[bytes], gateway: SimulatedGateway, rng: random.Random
) -> bool:
    """SIGKILL during start-up, or after a random number of the run's requests; True if killed."""
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.05, 0.6))  # imports, ledger scan, lock
    else:
        target = gateway.stats.requests + rng.randint(1, 150)
        while gateway.stats.requests < target and process.poll() is None:
            time.sleep(0.002)
    if process.poll() is not None:
        return False
    process.kill()
    process.communicate(timeout=60)
    return True


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Seeded kill loop: rounds of runs killed until one finishes; each round's results hold
    every trade exactly once and its last failures the rest."""
    rng = random.Random(20261128)
    kills = rounds = runs = torn = 0
    with SimulatedGateway.in_thread(GATEWAY) as gateway:
        while kills < KILLS and rounds < KILLS:
            rounds += 1
            directory = tmp_path / f"round-{rounds}"
            directory.mkdir()
            run = 0
            while True:
                process = start_run(directory, gateway.base_url, run, rng)
                runs += 1
                if not _kill_at_a_random_moment(process, gateway, rng):
                    _, stderr = process.communicate(timeout=60)
                    assert b"Traceback" not in stderr
                    if process.returncode in (0, 1):
                        break
                else:
                    kills += 1
                run += 1
                assert run < 40, "the round never finished"
            assert_exactly_once(directory, run)
            audit = read_jsonl(directory / "audit.jsonl")
            torn += sum(1 for e in audit if e["event"] == "file.torn_line_cut")
    assert kills >= KILLS
    print(
        f"\nkill loop: {kills} SIGKILLs in {runs} runs over {rounds} rounds, {torn} torn lines cut"
    )


def test_sigterm_loses_nothing_in_flight(tmp_path: Path) -> None:
    """SIGTERM: exit 143; every trade the run tried is a result or a recorded failure/pending."""
    rng = random.Random(7)
    terminated = 0
    # Slow enough (30 ms a request) that a run is still going when the signal comes.
    slow = replace(GATEWAY, latency_ms=30)
    with SimulatedGateway.in_thread(slow) as gateway:
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
