"""``trade-ingest report`` figures, checked against an audit log built with known latencies."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trade_ingest.audit import AuditLog
from trade_ingest.cli import app
from trade_ingest.clock import FakeClock
from trade_ingest.report import build_report, sparkline

SETTINGS = {"concurrency": 4}


def known_log(pool_timeouts: int = 0) -> list[bytes]:
    """100 trades, one at a time: trade n takes (n + 1) * 10 ms; T7 needs a retry after a
    429 with Retry-After: 2 that pauses the batch; the clock starts on a minute boundary."""
    clock = FakeClock(start_wall=1_764_000_000.0 - 1_764_000_000.0 % 60)
    stream = io.StringIO()
    audit = AuditLog(stream, "B1", clock)
    audit.emit("batch.started", settings=SETTINGS)
    for n in range(100):
        trade = f"T{n}"
        latency = (n + 1) / 100
        if trade == "T7":
            clock.advance(0.05)
            audit.emit(
                "trade.attempt",
                trade_id=trade,
                attempt=1,
                outcome="rate_limited",
                status=429,
                latency_ms=50.0,
            )
            audit.emit(
                "trade.retry_scheduled",
                trade_id=trade,
                attempt=1,
                cause="rate_limited",
                delay_s=2.0,
                delay_source="retry_after",
                hint="2",
            )
            audit.emit(
                "batch.paused", trade_id=trade, attempt=1, pause_s=2.0, delay_source="retry_after"
            )
            clock.advance(2.0)
            audit.emit("batch.resumed", paused_s=2.0)
        for _ in range(pool_timeouts if n == 0 else 0):
            audit.emit(
                "trade.attempt",
                trade_id=trade,
                attempt=1,
                outcome="pool_timeout",
                status=None,
                latency_ms=0.0,
            )
            audit.emit(
                "trade.retry_scheduled",
                trade_id=trade,
                attempt=1,
                cause="pool_timeout",
                delay_s=0.0,
                delay_source="backoff",
            )
        clock.advance(latency)
        attempt = 2 if trade == "T7" else 1
        audit.emit(
            "trade.attempt",
            trade_id=trade,
            attempt=attempt,
            outcome="ok",
            status=200,
            latency_ms=latency * 1000,
        )
        if trade == "T99":
            audit.emit("trade.failed", trade_id=trade, attempt=1, reason="http_404", status=404)
        else:
            audit.emit("trade.fetched", trade_id=trade, attempt=attempt, status=200)
    audit.emit("trade.duplicate_skipped", trade_id="T1", line=101, first_line=2)
    audit.emit("batch.finished", stop_reason="completed")
    return stream.getvalue().encode().splitlines(keepends=True)


def test_report_figures_match_the_known_log() -> None:
    """Counts, pauses and their hint, quantiles (within the histogram's 2%), slowest first."""
    report = build_report(known_log(), top=3)
    data = report.as_dict(top=3)
    assert data["outcomes"] == {"fetched": 99, "failed": 1, "duplicate_skipped": 1}
    assert data["failures_by_reason"] == {"http_404": 1}
    assert data["responses_by_status"] == {"200": 100, "429": 1}
    assert data["retries_by_cause"] == {"rate_limited": 1}
    assert data["pauses_by_source"] == {
        "retry_after": {"pauses": 1, "seconds": 2.0, "hints": {"2": 1}}
    }
    assert data["paused_seconds"] == 2.0
    latency = data["latency_ms"]
    assert latency["count"] == 101
    assert latency["p50"] == pytest.approx(500, rel=0.03)
    assert latency["p90"] == pytest.approx(890, rel=0.03)
    assert latency["max"] == 1000
    assert sum(latency["histogram"].values()) == 101
    assert latency["histogram"]["500-1000ms"] == 50
    # T7 took its pause and two attempts: 2.05 s + 0.08 s; then the slowest single ones
    # (T99's 404 included: slow is slow, whatever the outcome).
    assert [row["trade_id"] for row in data["slowest_trades"]] == ["T7", "T99", "T98"]
    assert data["slowest_trades"][1]["outcome"] == "http_404"
    assert data["slowest_trades"][0]["attempts"] == 2
    assert data["slowest_trades"][0]["seconds"] == pytest.approx(2.13, abs=0.01)
    busy = sum((n + 1) / 100 for n in range(100)) + 2.05
    assert data["elapsed_seconds"] == pytest.approx(busy, abs=0.01)
    per_minute = list(data["fetched_per_minute"].values())
    assert sum(per_minute) == 99 and len(per_minute) == 1
    # One request at a time against a concurrency of 4: the batch was starved, not throttled.
    assert data["diagnosis"][0].startswith("input or pacing: only 1.0 of 4 requests in flight")


def test_pool_timeouts_are_diagnosed_as_local() -> None:
    """Our own pool running out is named as the bottleneck, not the gateway."""
    report = build_report(known_log(pool_timeouts=3))
    assert report.pool_timeouts == 3
    assert report.diagnosis()[0].startswith("local bottleneck")


def test_unreadable_lines_are_counted_not_fatal() -> None:
    """A torn or foreign line does not stop the report."""
    report = build_report([b"not json\n", *known_log(), b'{"event":'])
    assert report.unreadable_lines == 2 and report.outcomes["fetched"] == 99


@pytest.mark.parametrize(
    ("values", "expected"), [([], ""), ([0, 0], "▁▁"), ([0, 1, 2, 4, 8], "▁▂▃▅█"), ([5], "█")]
)
def test_sparkline(values: list[int], expected: str) -> None:
    assert sparkline(values) == expected


def test_report_command(tmp_path: Path) -> None:
    """Readable by default, JSON with --json; a missing log is exit 66."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(known_log()))
    runner = CliRunner()
    shown = runner.invoke(app, ["report", str(path)], terminal_width=120)
    assert shown.exit_code == 0, shown.output
    assert "diagnosis" in shown.stdout and "retry_after" in shown.stdout
    assert "slowest" in shown.stdout and "T7" in shown.stdout
    as_json = runner.invoke(app, ["report", str(path), "--json", "--top", "2"])
    assert json.loads(as_json.stdout)["slowest_trades"][1]["trade_id"] == "T99"
    assert runner.invoke(app, ["report", str(tmp_path / "none.jsonl")]).exit_code == 66
