"""Hostile servers: every transport and payload fault ends as a retry with the right cause,
then a recorded failure; never a traceback, a hang or a result written for the wrong trade."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.fault_server import fault_server, refused_url
from trade_ingest.config import Settings
from trade_ingest.errors import ExitCode
from trade_ingest.pipeline import Job, RunReport, run_job

pytestmark = pytest.mark.integration

# Fault -> (the failure's reason, the cause each attempt was recorded with).
FAULTS: dict[str, tuple[str, str]] = {
    "close": ("retries_exhausted", "connection_closed"),
    "reset": ("retries_exhausted", "connection_closed"),
    "short": ("retries_exhausted", "connection_closed"),
    "garbage": ("retries_exhausted", "connection_closed"),
    "drip": ("retries_exhausted", "timeout"),
    "hang": ("retries_exhausted", "timeout"),
    "bomb": ("body_too_large", "body_too_large"),
    "huge": ("body_too_large", "body_too_large"),
    "mismatch": ("retries_exhausted", "invalid_body"),
    "nan": ("retries_exhausted", "invalid_body"),
}
# Short timeouts keep the matrix fast: a drip of one byte per 0.2 s never trips the
# 0.6 s per-read timeout, only the whole-attempt deadline.
SETTINGS = dict(
    max_attempts=2, attempt_timeout=1.0, read_timeout=0.6, backoff_base=0.01, backoff_max=0.05
)


TRANSPORTS = ["httpcore", "aiohttp"]


def run(tmp_path: Path, base_url: str, ids: list[str], transport: str) -> RunReport:
    settings = Settings(
        base_url=base_url,
        concurrency=len(ids),
        http_transport=transport,
        **SETTINGS,  # type: ignore[arg-type]
    )
    return _run_job(tmp_path, ids, settings)


def _run_job(directory: Path, ids: list[str], settings: Settings) -> RunReport:
    (directory / "ids.txt").write_text("\n".join(ids) + "\n")
    job = Job(
        settings=settings,
        input_path=directory / "ids.txt",
        output_path=directory / "trades.jsonl",
        failures_path=directory / "failed.jsonl",
        audit_path=directory / "audit.jsonl",
        batch_id="B-faults",
    )
    return run_job(job, env={})


@pytest.fixture(scope="module", params=TRANSPORTS)
def faulty_batch(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Path, RunReport]:
    """The whole matrix in one batch, once per transport: both must agree on every cause."""
    directory = tmp_path_factory.mktemp(f"faults-{request.param}")
    with fault_server() as url:
        report = run(directory, url, ["ok-1", *(f"{kind}-1" for kind in FAULTS)], request.param)
    return directory, report


def test_only_the_good_trade_is_written(faulty_batch: tuple[Path, RunReport]) -> None:
    """One result (the good trade); every fault a failure; exit 1, nothing pending."""
    directory, report = faulty_batch
    results = [json.loads(x) for x in (directory / "trades.jsonl").read_text().splitlines()]
    assert [r["trade_id"] for r in results] == ["ok-1"]
    assert report.exit_code == ExitCode.TRADES_FAILED
    assert report.stats.failed == len(FAULTS) and report.stats.pending == 0


@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_has_its_cause(faulty_batch: tuple[Path, RunReport], kind: str) -> None:
    """The failure names the right reason; each attempt the right cause."""
    directory, _ = faulty_batch
    reason, cause = FAULTS[kind]
    failures = {
        f["trade_id"]: f
        for f in map(json.loads, (directory / "failed.jsonl").read_text().splitlines())
    }
    assert failures[f"{kind}-1"]["reason"] == reason
    attempts: dict[str, list[str]] = defaultdict(list)
    for event in map(json.loads, (directory / "audit.jsonl").read_text().splitlines()):
        if event["event"] == "trade.attempt":
            attempts[event["trade_id"]].append(event["outcome"])
    expected = [cause] if reason == "body_too_large" else [cause, cause]
    assert attempts[f"{kind}-1"] == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_refused(tmp_path: Path, transport: str) -> None:
    """Nothing listening: connect_error, retried, then a recorded failure."""
    report = run(tmp_path, refused_url(), ["T1"], transport)
    failure = json.loads((tmp_path / "failed.jsonl").read_text())
    assert failure["reason"] == "retries_exhausted"
    assert "connect_error" in failure["error"]
    assert report.stats.retries_by_cause == {"connect_error": 1}


def _run_budgeted(tmp_path: Path, ids: list[str], **settings: Any) -> RunReport:
    """``ids`` against the fault server, up to four attempts each, with ``settings``."""
    with fault_server() as url:
        return _run_job(tmp_path, ids, Settings(base_url=url, max_attempts=4, **settings))


def test_errors_early_in_a_batch_hold_trades_back_until_the_budget_grows(
    tmp_path: Path,
) -> None:
    """Five trades fail twice each, first in a batch of 40, with a budget of 2 retries plus
    one for every five trades tried. The retries past the budget wait for it to grow instead
    of failing: all 40 are fetched, and no retry is ever sent beyond the budget."""
    ids = [f"flaky-2-{n}" for n in range(5)] + [f"ok-{n}" for n in range(35)]
    report = _run_budgeted(
        tmp_path,
        ids,
        concurrency=1,  # the audit's order is then the order of the sends
        retry_budget=0.2,
        retry_budget_min=2,
        backoff_base=0.01,
        backoff_max=0.05,
    )
    assert report.exit_code == ExitCode.OK
    results = [
        json.loads(x)["trade_id"] for x in (tmp_path / "trades.jsonl").read_text().splitlines()
    ]
    assert sorted(results) == sorted(ids)
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {e["trade_id"] for e in events if e["event"] == "trade.retry_held"} >= {"flaky-2-1"}
    first_attempts = retries = 0
    for event in events:
        if event["event"] == "trade.attempt" and event["attempt"] == 1:
            first_attempts += 1
        if event["event"] in ("trade.retry_scheduled", "trade.retry_released"):
            # Each retry is taken while those before it are under the budget.
            assert retries < 2 + 0.2 * first_attempts
            retries += 1
    assert retries == 10
    assert report.stats.retries_by_cause == {"server_error": 10}


def test_held_back_trades_the_budget_never_covers_are_left_for_the_next_run(
    tmp_path: Path,
) -> None:
    """No retries at all in the budget: the failing trades are held back, then, once every
    trade has been tried, recorded as retry_budget_exhausted (exit 75), never retried."""
    ids = [f"flaky-1-{n}" for n in range(6)] + [f"ok-{n}" for n in range(10)]
    report = _run_budgeted(tmp_path, ids, concurrency=4, retry_budget=0.0, retry_budget_min=0)
    assert report.exit_code == ExitCode.TEMP_FAIL
    failures = [json.loads(x) for x in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert sorted(f["trade_id"] for f in failures) == sorted(ids[:6])
    assert {(f["reason"], f["attempts"]) for f in failures} == {("retry_budget_exhausted", 1)}
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("trade.retry_held") == 6
    assert "trade.retry_released" not in kinds
    assert kinds.count("trade.attempt") == len(ids)  # one request each: nothing retried
