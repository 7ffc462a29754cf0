"""Resuming on loopback: the ledger, the manifest, the lock, --retry-failed, closed pipes, full disks."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from trade_ingest.config import Settings
from trade_ingest.errors import ExitCode, OutputError, UsageError
from trade_ingest.pipeline import Job, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway
from trade_ingest.sinks import OutputLock, result_line

pytestmark = pytest.mark.integration
RUN = [sys.executable, "-m", "trade_ingest", "run"]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def events(path: Path, name: str) -> list[dict[str, object]]:
    return [e for e in read_jsonl(path) if e["event"] == name]


@pytest.fixture
def gateway() -> Iterator[SimulatedGateway]:
    with SimulatedGateway.in_thread(GatewayConfig()) as running:
        yield running


def job_for(tmp_path: Path, base_url: str, ids: list[str], batch_id: str, **options: object) -> Job:
    input_path = tmp_path / f"ids-{batch_id}.txt"
    input_path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    job = Job(
        settings=Settings(base_url=base_url, concurrency=4),
        input_path=input_path,
        output_path=tmp_path / "trades.jsonl",
        failures_path=tmp_path / f"failed-{batch_id}.jsonl",
        audit_path=tmp_path / "audit.jsonl",
        batch_id=batch_id,
    )
    return replace(job, **options)  # type: ignore[arg-type]


def test_resume_with_resorted_duplicated_input_fetches_only_what_is_missing(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """A ledger keyed by trade ID: order and repeats of the new input do not matter."""
    first = [f"T{n}" for n in range(0, 60)]
    run_job(job_for(tmp_path, gateway.base_url, first, "B1"), env={})
    everything = [f"T{n}" for n in range(100)]
    second = everything + first[::-1]  # extra IDs, re-sorted, the first half twice
    random.Random(5).shuffle(second)
    report = run_job(job_for(tmp_path, gateway.base_url, second, "B2"), env={})

    ids = [r["trade_id"] for r in read_jsonl(tmp_path / "trades.jsonl")]
    assert sorted(ids) == sorted(everything)
    assert report.stats.already_ingested == 60
    assert report.stats.ingested == 40
    assert report.exit_code == ExitCode.OK
    assert set(gateway.stats.per_trade.values()) == {1}
    skipped = {e["trade_id"] for e in events(tmp_path / "audit.jsonl", "trade.already_ingested")}
    assert skipped == set(first)
    opened = events(tmp_path / "audit.jsonl", "ledger.opened")
    assert [(e["trades"], e["previous_batch_id"]) for e in opened] == [(0, None), (60, "B1")]


def test_manifest_records_each_run_and_a_changed_input(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """run.started / run.finished per batch; the second input differs and says so."""
    run_job(job_for(tmp_path, gateway.base_url, ["A1", "A2"], "B1"), env={})
    run_job(job_for(tmp_path, gateway.base_url, ["A2", "A3"], "B2"), env={})
    manifest = read_jsonl(tmp_path / "trades.jsonl.manifest.jsonl")
    assert [(m["record"], m["batch_id"]) for m in manifest] == [
        ("run.started", "B1"),
        ("run.finished", "B1"),
        ("run.started", "B2"),
        ("run.finished", "B2"),
    ]
    assert manifest[1]["input_changed"] is None
    assert manifest[3]["input_changed"] is True
    assert manifest[2]["previous_batch_id"] == "B1" and manifest[2]["previous_run_finished"]
    assert manifest[2]["ledger_trades"] == 2
    assert manifest[0]["settings"]["concurrency"] == 4


def test_torn_last_line_is_cut_and_the_trade_fetched_again(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """A crash mid-write left half a record: it is cut, logged with its hash, and refetched."""
    results = tmp_path / "trades.jsonl"
    whole = result_line("T1", "B0", 0.0, 1, '{"trade_id":"T1"}')
    torn = result_line("T2", "B0", 0.0, 1, '{"trade_id":"T2"}')[:30]
    results.write_bytes(whole + torn)
    report = run_job(job_for(tmp_path, gateway.base_url, ["T1", "T2", "T3"], "B1"), env={})
    assert read_jsonl(results)[0]["batch_id"] == "B0"
    assert sorted(r["trade_id"] for r in read_jsonl(results)) == ["T1", "T2", "T3"]
    assert report.stats.already_ingested == 1
    (cut,) = events(tmp_path / "audit.jsonl", "file.torn_line_cut")
    assert cut["path"] == str(results) and cut["bytes_cut"] == 30 and cut["offset"] == len(whole)


def test_no_resume_refuses_a_results_file_with_trades(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """--no-resume is for a user who expects a fresh file: exit 73, nothing fetched."""
    run_job(job_for(tmp_path, gateway.base_url, ["T1"], "B1"), env={})
    with pytest.raises(OutputError, match="already holds 1 trades") as caught:
        run_job(job_for(tmp_path, gateway.base_url, ["T2"], "B2", resume=False), env={})
    assert caught.value.exit_code == ExitCode.CANT_CREATE
    assert gateway.stats.per_trade["T2"] == 0


def test_commits_are_fsynced_before_the_audit_log_says_so(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """The final batch.committed names every result line, before batch.finished."""
    report = run_job(
        job_for(tmp_path, gateway.base_url, [f"T{n}" for n in range(30)], "B1"), env={}
    )
    audit = read_jsonl(tmp_path / "audit.jsonl")
    names = [e["event"] for e in audit]
    committed = [e for e in audit if e["event"] == "batch.committed"]
    assert committed[-1]["final"] is True
    assert committed[-1]["results_lines"] == report.stats.ingested == 30
    assert committed[-1]["results_bytes"] == (tmp_path / "trades.jsonl").stat().st_size
    assert names.index("batch.finished") > names.index("batch.committed")


def test_retry_failed_takes_only_what_is_worth_retrying(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """Deferred and pending trades are fetched again; 404s and invalid IDs are left alone."""
    failures = tmp_path / "failed-old.jsonl"
    records = [
        {"trade_id": "D1", "reason": "deferred"},
        {"trade_id": "P1", "reason": "pending"},
        {"trade_id": "N1", "reason": "http_404"},
        {"trade_id": "bad id", "reason": "invalid_id"},
        {"trade_id": "P1", "reason": "pending"},
    ]
    failures.write_text("".join(json.dumps(r) + "\n" for r in records))
    job = replace(
        job_for(tmp_path, gateway.base_url, [], "B1"), input_path=failures, retry_failed=True
    )
    report = run_job(job, env={})
    assert sorted(r["trade_id"] for r in read_jsonl(tmp_path / "trades.jsonl")) == ["D1", "P1"]
    assert report.stats.not_worth_retrying == 2
    assert report.stats.duplicates == 1
    assert report.exit_code == ExitCode.OK
    assert gateway.stats.per_trade.keys() == {"D1", "P1"}


def _run_cli(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*RUN, *args],
        capture_output=True,
        timeout=60,
        **kwargs,
    )


def test_second_run_on_a_locked_output_exits_75_or_waits(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """The lock: a clear message and exit 75 at once, or --wait-lock until it is free."""
    (tmp_path / "ids.txt").write_text("T1\nT2\n")
    output = tmp_path / "trades.jsonl"
    lock = OutputLock(output)
    assert lock.try_acquire({"pid": 4242, "batch_id": "B-other", "since": "08:00"})
    common = ["ids.txt", "--base-url", gateway.base_url, "-o", str(output), "-q"]
    try:
        refused = _run_cli([*common, "--audit-log", "a1.jsonl"], cwd=tmp_path)
        assert refused.returncode == 75
        assert b"pid 4242, batch B-other" in refused.stderr
        assert b"--wait-lock" in refused.stderr
        assert refused.stderr.count(b"\n") == 1
        late = _run_cli([*common, "--wait-lock", "--deadline", "1s"], cwd=tmp_path)
        assert late.returncode == 75 and b"waited until the deadline" in late.stderr
        threading.Timer(0.5, lock.release).start()
        waited = _run_cli([*common, "--wait-lock", "--audit-log", "a2.jsonl"], cwd=tmp_path)
    finally:
        lock.release()
    assert waited.returncode == 0, waited.stderr
    assert sorted(r["trade_id"] for r in read_jsonl(output)) == ["T1", "T2"]


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """`| head`: the run stops at the closed pipe, says nothing, exits 75; no traceback."""
    (tmp_path / "ids.txt").write_text("".join(f"T{n}\n" for n in range(5000)))
    with SimulatedGateway.in_thread(GatewayConfig(latency_ms=2)) as gateway:
        process = subprocess.Popen(
            [
                *RUN,
                "ids.txt",
                "--base-url",
                gateway.base_url,
                "--audit-log",
                "audit.jsonl",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()
        _, stderr = process.communicate(timeout=30)
    assert all(json.loads(line)["trade_id"] for line in first)
    assert process.returncode == 75
    assert stderr == b""
    finished = events(tmp_path / "audit.jsonl", "batch.finished")[0]
    assert finished["stop_reason"] == "output_closed"


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_full_disk_exits_74_and_a_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    """Files stop growing mid-run (RLIMIT_FSIZE, as a full disk): exit 74, one clear line,
    only whole records left; the next run resumes and nothing is written twice.

    A gateway taking 5 ms a trade, 2 at a time: the first flush (50 ms) comes before the
    audit log reaches the limit, so some results are written, however fast the client."""
    ids = [f"T{n}" for n in range(300)]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    with SimulatedGateway.in_thread(GatewayConfig(latency_ms=5)) as gateway:
        _fill_the_disk_then_resume(tmp_path, gateway, ids)


def _fill_the_disk_then_resume(tmp_path: Path, gateway: SimulatedGateway, ids: list[str]) -> None:
    args = ["ids.txt", "--base-url", gateway.base_url, "-o", "trades.jsonl", "-q", "-c", "2"]
    full = _run_cli(
        [*args, "--audit-log", "a1.jsonl"],
        cwd=tmp_path,
        preexec_fn=lambda: _limit_file_size(40_000),
    )
    assert full.returncode == 74, full.stderr
    assert b"Traceback" not in full.stderr
    assert full.stderr.count(b"\n") == 1 and b"too large" in full.stderr.lower()
    results = tmp_path / "trades.jsonl"
    assert results.read_bytes().endswith(b"\n")
    before = len(read_jsonl(results))
    assert before < 300
    again = _run_cli([*args, "--audit-log", "a2.jsonl"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    final = [r["trade_id"] for r in read_jsonl(results)]
    assert sorted(final) == sorted(ids)


def test_stdout_on_a_full_device_exits_74(tmp_path: Path, gateway: SimulatedGateway) -> None:
    """Results to /dev/full: one line naming stdout and the cause, exit 74."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    (tmp_path / "ids.txt").write_text("T1\nT2\n")
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [
                *RUN,
                "ids.txt",
                "--base-url",
                gateway.base_url,
                "--audit-log",
                "a.jsonl",
                "-q",
            ],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert done.returncode == 74
    assert b"writing results to stdout failed" in done.stderr
    assert b"free some disk space" in done.stderr
    assert b"Traceback" not in done.stderr


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """SIGTERM waits for in-flight trades; a second SIGTERM does not, and leaves no torn line."""
    (tmp_path / "ids.txt").write_text("".join(f"T{n}\n" for n in range(100)))
    with SimulatedGateway.in_thread(GatewayConfig(latency_ms=15_000)) as gateway:
        process = subprocess.Popen(
            [
                *RUN,
                "ids.txt",
                "--base-url",
                gateway.base_url,
                "-o",
                "trades.jsonl",
                "--audit-log",
                "audit.jsonl",
                "--shutdown-grace",
                "60",
                "-q",
            ],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while gateway.stats.requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        took = time.monotonic() - stopped_at
    assert process.returncode == 143
    assert b"Traceback" not in stderr
    assert took < 10  # neither the 60 s grace nor the 15 s answer was waited for
    content = (tmp_path / "trades.jsonl").read_bytes()
    assert content == b"" or content.endswith(b"\n")


def test_retrying_failures_into_the_same_file_is_refused(
    tmp_path: Path, gateway: SimulatedGateway
) -> None:
    """--retry-failed F --failures F would read its own new records: a usage error."""
    failures = tmp_path / "failed.jsonl"
    failures.write_text(json.dumps({"trade_id": "D1", "reason": "deferred"}) + "\n")
    job = replace(
        job_for(tmp_path, gateway.base_url, [], "B1"),
        input_path=failures,
        failures_path=failures,
        retry_failed=True,
    )
    with pytest.raises(UsageError, match="both the input and an output"):
        run_job(job, env={})
    assert gateway.stats.requests == 0
