"""Each limiter kind on loopback: nothing sent while a pause is in force, every ID accounted for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trade_ingest import fetch
from trade_ingest.config import Settings
from trade_ingest.errors import ExitCode
from trade_ingest.pacing import Pacer
from trade_ingest.pipeline import Job, RunReport, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway

pytestmark = pytest.mark.integration


@dataclass
class Run:
    ids: list[str]
    report: RunReport
    events: list[dict[str, Any]]
    results: list[str]
    failures: list[dict[str, Any]]
    gateway: SimulatedGateway


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run(tmp_path: Path, config: GatewayConfig, count: int, **settings: Any) -> Run:
    ids = [f"T{n:04d}" for n in range(count)]
    (tmp_path / "ids").write_text("\n".join(ids) + "\n")
    with SimulatedGateway.in_thread(config) as gateway:
        job = Job(
            settings=Settings(base_url=gateway.base_url, max_attempts=10, **settings),
            input_path=tmp_path / "ids",
            output_path=tmp_path / "out.jsonl",
            failures_path=tmp_path / "failed.jsonl",
            audit_path=tmp_path / "audit.jsonl",
            batch_id="B",
        )
        report = run_job(job, env={})
    results = [str(r["trade_id"]) for r in _lines(tmp_path / "out.jsonl")]
    return Run(
        ids,
        report,
        _lines(tmp_path / "audit.jsonl"),
        results,
        _lines(tmp_path / "failed.jsonl"),
        gateway,
    )


def _epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def _sends_during_pauses(events: list[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """(pause start, pause end, send time) for every request sent while a pause held."""
    pauses = [
        (_epoch(e), _epoch(e) + float(e["pause_s"])) for e in events if e["event"] == "batch.paused"
    ]
    sends = [
        _epoch(e) - float(e["latency_ms"]) / 1000 for e in events if e["event"] == "trade.attempt"
    ]
    slack = 0.005  # the wall and monotonic clocks are read a few microseconds apart
    return [
        (start, end, sent)
        for start, end in pauses
        for sent in sends
        if start + slack < sent < end - slack
    ]


@pytest.mark.parametrize(
    "config",
    [
        GatewayConfig(limiter="fixed", rate_limit=10, window=0.5, limit_headers="none"),
        GatewayConfig(limiter="sliding", rate_limit=10, window=0.5, limit_headers="none"),
        GatewayConfig(limiter="token", rate_limit=40, window=0.5, burst=10, limit_headers="none"),
        GatewayConfig(
            limiter="fixed",
            rate_limit=10,
            window=0.5,
            penalty=True,
            retry_after="http-date",
            limit_headers="none",
        ),
    ],
    ids=["fixed", "sliding", "token", "fixed-penalty-http-date"],
)
def test_no_send_during_a_pause_and_every_id_accounted(
    tmp_path: Path, config: GatewayConfig
) -> None:
    """Throttled without quota headers: 429s pause everyone, and nothing is lost or doubled.

    Unpaced, 40 requests take milliseconds, so they cannot all fit in the two
    windows they span: at least one 429 is certain.
    """
    run = _run(tmp_path, config, 40, release_jitter=0.02)
    assert sorted(run.results) == run.ids
    assert run.report.exit_code == ExitCode.OK
    assert run.gateway.stats.by_status[429] >= 1
    assert any(e["event"] == "batch.paused" for e in run.events)
    assert _sends_during_pauses(run.events) == []


def test_a_quota_of_one_is_not_met_by_every_worker_at_once(tmp_path: Path) -> None:
    """One request a window, told only by Retry-After (as CAISO's one every 5 s): at the
    start the batch sends one request, not one a worker, and more only as answers come
    back, so a refused request does not bring every other worker's 429 with it, all
    landing inside the new Retry-After."""
    config = GatewayConfig(limiter="fixed", rate_limit=1, window=1.0, limit_headers="none")
    run = _run(tmp_path, config, 5, concurrency=8)
    assert sorted(run.results) == run.ids
    # Measured: 1 inside a Retry-After and 4 refused, five runs out of five. Every
    # worker at once after the first answer, as before: 4-5 inside and 7-8 refused.
    assert run.gateway.stats.during_retry_after <= 3
    assert run.gateway.stats.by_status[429] <= 6
    assert _sends_during_pauses(run.events) == []


def test_a_slot_held_when_the_window_reads_longer_waits_for_it(tmp_path: Path) -> None:
    """One request per 3 s, the run starting 1.5 s before a turn: the first reset reads
    2 s, the next 3 s. The worker handed a slot by the 2 s reading asks again, instead of
    sending into a 429 (as it did, once a run)."""
    config = GatewayConfig(
        limiter="fixed", rate_limit=1, window=3.0, window_phase=0.5, latency_ms=10.0
    )
    run = _run(tmp_path, config, 3)
    assert sorted(run.results) == run.ids
    assert run.gateway.stats.by_status[429] == 0


@pytest.mark.parametrize("style", ["delta", "epoch", "ietf"])
def test_quota_headers_pace_without_429(tmp_path: Path, style: Any) -> None:
    """When the headers tell the quota, the batch paces itself under it."""
    config = GatewayConfig(limiter="sliding", rate_limit=20, window=1.0, limit_headers=style)
    run = _run(tmp_path, config, 20)
    assert sorted(run.results) == run.ids
    assert run.gateway.stats.by_status[429] == 0
    learned = [e for e in run.events if e["event"] == "pacing.rate_learned"]
    assert learned[0]["source"] == "headers"
    assert learned[0]["rate_per_s"] <= 20.0


def test_configured_rate_never_sees_a_429(tmp_path: Path) -> None:
    """--rate-limit at the documented limit: no 429 at all, even with no headers."""
    config = GatewayConfig(limiter="fixed", rate_limit=10, window=1.0, limit_headers="none")
    run = _run(tmp_path, config, 20, rate_limit="10/s")
    assert sorted(run.results) == run.ids
    assert run.gateway.stats.by_status[429] == 0


def test_deadline_defers_the_rest_and_exits_75(tmp_path: Path) -> None:
    """Past the deadline the run stops cleanly: what is left is deferred for the next run."""
    config = GatewayConfig(rate_limit=5, window=1.0)
    run = _run(tmp_path, config, 40, rate_limit="5/s", deadline="1s")
    assert run.report.exit_code == ExitCode.TEMP_FAIL
    assert {f["reason"] for f in run.failures} == {"deferred"}
    assert all("deadline" in f["error"] for f in run.failures)
    assert sorted(run.results + [f["trade_id"] for f in run.failures]) == run.ids
    assert 3 <= len(run.results) <= 10


def test_retry_budget_stops_hammering_a_sick_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request failing: retries stop at the budget; the rest fail fast for a later run."""
    pacers = _watch_pacers(monkeypatch)
    config = GatewayConfig(error_rate=1.0)
    run = _run(tmp_path, config, 30, retry_budget=0.1, retry_budget_min=2, backoff_base=0.01)
    assert [pacer.backlog for pacer in pacers] == [0]  # those given up included
    assert run.results == []
    assert len(run.failures) == 30
    assert {f["reason"] for f in run.failures} <= {"retry_budget_exhausted", "retries_exhausted"}
    assert run.gateway.stats.requests <= 30 + 2 + 3  # first attempts + the budget
    assert run.report.exit_code == ExitCode.TEMP_FAIL


class _WatchedPacer(Pacer):
    """A pacer that notes the backlog it was told at each send slot asked for."""

    def __init__(self, configured_rate: float | None = None) -> None:
        super().__init__(configured_rate)
        self.seen: list[int] = []

    def reserve(self, now: float) -> float | None:
        self.seen.append(self.backlog)
        return super().reserve(now)


def _watch_pacers(monkeypatch: pytest.MonkeyPatch) -> list[_WatchedPacer]:
    """Each run's pacer, in the order the runs made them."""
    pacers: list[_WatchedPacer] = []

    def made(configured_rate: float | None = None) -> _WatchedPacer:
        pacers.append(_WatchedPacer(configured_rate))
        return pacers[-1]

    monkeypatch.setattr(fetch, "Pacer", made)
    return pacers


def test_the_pacer_is_told_how_many_trades_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pacer weighs a try against the trades left to fetch (see TRY_COST_SHARE): the
    batch counts those read from the input, less those already in the output (a re-run),
    less those done, failures and a 429's retries included."""
    pacers = _watch_pacers(monkeypatch)
    config = GatewayConfig(limiter="fixed", rate_limit=4, window=0.5, limit_headers="none")
    ids = [f"T{n:04d}" for n in range(30)]
    refused = 0
    for count in (20, 30):  # the second run finds the first 20 in its output
        (tmp_path / "ids").write_text("\n".join([*ids[:count], "not an id!", ids[0]]) + "\n")
        with SimulatedGateway.in_thread(config) as gateway:
            job = Job(
                settings=Settings(base_url=gateway.base_url, release_jitter=0.02),
                input_path=tmp_path / "ids",
                output_path=tmp_path / "out.jsonl",
                failures_path=tmp_path / "failed.jsonl",
                audit_path=tmp_path / f"audit-{count}.jsonl",
                batch_id=f"B{count}",
            )
            report = run_job(job, env={})
        refused += gateway.stats.by_status[429]
        assert report.exit_code == ExitCode.TRADES_FAILED  # the line that is not an ID
    first, again = (pacer.seen for pacer in pacers)
    assert first[0] == 20 and again[0] == 10
    for backlogs in (first, again):
        assert backlogs == sorted(backlogs, reverse=True)
        assert backlogs[-1] > 0  # the last send: its trade not yet done
    assert [pacer.backlog for pacer in pacers] == [0, 0]  # every trade done, once
    assert refused >= 1  # a 429's retry was counted once, with its trade
    assert sorted(str(r["trade_id"]) for r in _lines(tmp_path / "out.jsonl")) == ids
