"""Audit-log benchmark: `report` and `audit verify` on a large log, streaming.

    python -m tests.bench.bench_audit              # 1,000,000 events
    python -m tests.bench.bench_audit --events 200000

Builds a realistic log (per trade: an attempt, sometimes a 429 with its retry
and pause, then fetched) with the real ``AuditLog`` on a fake clock, then runs
both commands in subprocesses and prints wall time, CPU time, events/s and
peak RSS. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trade_ingest.audit import AuditLog
from trade_ingest.clock import FakeClock


def build_log(path: Path, events: int) -> float:
    """Write about ``events`` events; returns seconds spent writing (the writer's own cost)."""
    clock = FakeClock()
    started = time.process_time()
    with path.open("w", encoding="utf-8") as stream:
        audit = AuditLog(stream, "B-bench", clock)
        audit.emit("batch.started", settings={"concurrency": 8})
        n = 0
        while audit.events_written < events - 1:
            trade = f"EEX-{n:08d}"
            n += 1
            clock.advance(0.004)
            if n % 50 == 0:
                audit.emit(
                    "trade.attempt",
                    trade_id=trade,
                    attempt=1,
                    outcome="rate_limited",
                    status=429,
                    latency_ms=20.0,
                )
                audit.emit(
                    "trade.retry_scheduled",
                    trade_id=trade,
                    attempt=1,
                    cause="rate_limited",
                    delay_s=1.0,
                    delay_source="retry_after",
                    batch_wide=True,
                    hint="1",
                )
                audit.emit(
                    "batch.paused",
                    trade_id=trade,
                    attempt=1,
                    pause_s=1.0,
                    delay_source="retry_after",
                )
                audit.emit("batch.resumed", paused_s=1.0)
            audit.emit(
                "trade.attempt",
                trade_id=trade,
                attempt=1,
                outcome="ok",
                status=200,
                latency_ms=10 + n % 90,
            )
            audit.emit("trade.fetched", trade_id=trade, attempt=1, status=200)
        audit.emit(
            "batch.finished", stop_reason="completed", first_seq=0, events=audit.events_written + 1
        )
    return time.process_time() - started


def measure(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "trade_ingest", *args], check=False, stdout=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as directory:
        path = Path(directory) / "audit.jsonl"
        writing = build_log(path, options.events)
        size = path.stat().st_size / 1e6
        print(
            f"log: {options.events} events, {size:.0f} MB; writing them cost {writing:.1f}s CPU "
            f"({writing / options.events * 1e6:.1f} us/event)"
        )
        print(f"{'command':<28}{'wall s':>8}{'CPU s':>8}{'events/s':>12}{'peak RSS MB':>13}")
        for name, args in (
            ("report", ["report", str(path)]),
            ("report --json", ["report", str(path), "--json"]),
            ("audit verify", ["audit", "verify", str(path)]),
        ):
            wall, cpu, rss = measure(args)
            print(f"{name:<28}{wall:>8.1f}{cpu:>8.1f}{options.events / wall:>12,.0f}{rss:>13.0f}")


if __name__ == "__main__":
    main()
