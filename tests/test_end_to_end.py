"""The whole run path against the simulated gateway on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trade_ingest.config import Settings
from trade_ingest.errors import ExitCode
from trade_ingest.pipeline import Job, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway

pytestmark = pytest.mark.integration


def read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def make_job(tmp_path: Path, base_url: str, ids: list[str], **settings: object) -> Job:
    input_path = tmp_path / "ids.txt"
    input_path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return Job(
        settings=Settings(base_url=base_url, release_jitter=0.05, **settings),  # type: ignore[arg-type]
        input_path=input_path,
        output_path=tmp_path / "trades.jsonl",
        failures_path=tmp_path / "failed.jsonl",
        audit_path=tmp_path / "audit.jsonl",
        batch_id="B-test",
    )


def test_throttled_batch_with_failures_accounts_for_every_id(tmp_path: Path) -> None:
    """Every ID ends in exactly one of results/failures; the gate keeps 429s per window low."""
    ids = [f"EEX-{n:05d}" for n in range(120)] + ["UNKNOWN-1", "bad/id", "EEX-00001"]
    # No quota headers: the client learns from 429s, and the gate is what holds it back.
    config = GatewayConfig(rate_limit=40, window=1.0, limit_headers="none", error_rate=0.05, seed=3)
    concurrency = 8
    with SimulatedGateway.in_thread(config) as gateway:
        job = make_job(tmp_path, gateway.base_url, ids, concurrency=concurrency, max_attempts=8)
        report = run_job(job, env={})
    results = read_jsonl(tmp_path / "trades.jsonl")
    failures = read_jsonl(tmp_path / "failed.jsonl")
    result_ids = [r["trade_id"] for r in results]
    failure_ids = [f["trade_id"] for f in failures]
    assert len(result_ids) == len(set(result_ids))
    assert len(failure_ids) == len(set(failure_ids))
    assert set(result_ids) | set(failure_ids) == set(ids)
    assert not set(result_ids) & set(failure_ids)
    assert {f["trade_id"]: f["reason"] for f in failures} == {
        "UNKNOWN-1": "http_404",
        "bad/id": "invalid_id",
    }
    assert report.exit_code == ExitCode.TRADES_FAILED
    assert report.stats.duplicates == 1
    for record in results:
        assert record["batch_id"] == "B-test"
        assert (
            isinstance(record["trade"], dict) and record["trade"]["trade_id"] == record["trade_id"]
        )
    # The batch-wide gate: a window's quota running out is discovered at most by the
    # requests already in flight, not by every worker again and again.
    windows = report.stats.elapsed / config.window + 1
    answered_429 = gateway.stats.by_status[429]
    assert answered_429 >= 1
    assert answered_429 <= concurrency * windows
    # Each valid ID reached the gateway, and none beyond what its retries explain.
    attempts = {r["trade_id"]: r["attempts"] for r in results}
    for trade_id, count in attempts.items():
        assert gateway.stats.per_trade[trade_id] == count
    events = read_jsonl(tmp_path / "audit.jsonl")
    names = [e["event"] for e in events]
    assert names[0] == "batch.started" and names[-1] == "batch.finished"
    assert names.count("trade.fetched") == len(results)
    assert "batch.paused" in names
    assert all(str(e["timestamp"]).endswith("Z") and e["batch_id"] == "B-test" for e in events)
    assert events[-1]["ingested"] == len(results)


def test_clean_batch_exits_zero_and_leaves_no_failures_file(tmp_path: Path) -> None:
    """No failures: exit 0, no failures file."""
    with SimulatedGateway.in_thread(GatewayConfig()) as gateway:
        report = run_job(make_job(tmp_path, gateway.base_url, ["A", "B", "C"]), env={})
    assert report.exit_code == ExitCode.OK
    assert len(read_jsonl(tmp_path / "trades.jsonl")) == 3
    assert not (tmp_path / "failed.jsonl").exists()


def test_retry_after_beyond_max_wait_defers_and_exits_75(tmp_path: Path) -> None:
    """A pause longer than max_wait defers the trades instead of sleeping through it."""
    config = GatewayConfig(rate_limit=1, window=3600.0)
    with SimulatedGateway.in_thread(config) as gateway:
        job = make_job(tmp_path, gateway.base_url, ["A", "B", "C", "D"], max_wait=5.0)
        report = run_job(job, env={})
    assert report.exit_code == ExitCode.TEMP_FAIL
    failures = read_jsonl(tmp_path / "failed.jsonl")
    assert {f["reason"] for f in failures} == {"deferred"}
    assert len(failures) == 3
    # Only the trades already in flight asked; the rest were deferred without a request.
    assert gateway.stats.requests <= Settings().concurrency


def test_dropped_connections_and_5xx_runs_are_retried(tmp_path: Path) -> None:
    """A gateway that hangs up unanswered and fails in runs still yields every trade once."""
    ids = [f"ICE-{n:04d}" for n in range(80)]
    config = GatewayConfig(drop_rate=0.1, error_rate=0.05, error_burst=3, seed=5)
    with SimulatedGateway.in_thread(config) as gateway:
        job = make_job(tmp_path, gateway.base_url, ids, backoff_base=0.01, max_attempts=10)
        report = run_job(job, env={})
    results = [r["trade_id"] for r in read_jsonl(tmp_path / "trades.jsonl")]
    assert sorted(results) == ids
    assert report.exit_code == ExitCode.OK
    assert gateway.stats.dropped > 0
    assert report.stats.retries_by_cause["connection_closed"] > 0
    assert report.stats.retries_by_cause["server_error"] > 0


def test_a_bug_in_a_worker_ends_the_run_instead_of_hanging_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies of a bug leaves the input queue full: the producer, cancelled
    as the loop shuts down, used to wait for room to tell the workers to stop, and the
    run hung for good, deaf to SIGTERM. It must end, raising the bug (exit 70 in main)."""
    import gc
    import threading
    import warnings

    from trade_ingest import pacing

    reserve = pacing.Pacer.reserve
    calls = 0

    def buggy_reserve(self: pacing.Pacer, now: float) -> float | None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise TypeError("a bug")
        return reserve(self, now)

    monkeypatch.setattr(pacing.Pacer, "reserve", buggy_reserve)
    raised: list[BaseException] = []
    with SimulatedGateway.in_thread(GatewayConfig(latency_ms=5.0)) as gateway:
        job = make_job(tmp_path, gateway.base_url, [f"T{n:04d}" for n in range(200)])

        def run() -> None:
            try:
                run_job(job, env={})
            except BaseException as exc:  # the test inspects it
                raised.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the run hung after a worker's bug"
    assert [type(exc) for exc in raised] == [TypeError]
    # Trades in flight are left pending for the next run, none failed for the bug.
    assert {f["reason"] for f in read_jsonl(tmp_path / "failed.jsonl")} <= {"pending"}
    # The client cut its requests short: a connection the gateway accepted as the loop
    # shut down may be left to the garbage collector. Collected here, not in the next test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
