"""``trade-ingest demo``: the whole product against the simulated gateway, in one command."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from trade_ingest.clock import SystemClock
from trade_ingest.config import Settings
from trade_ingest.pipeline import Job, RunReport, new_batch_id, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway
from trade_ingest.stats import RunStats

# Throttled on purpose: 8 workers at ~15ms a request could send ~500/s. No
# quota headers, so the demo shows the batch learning the rate from its 429s.
DEMO_GATEWAY = GatewayConfig(
    rate_limit=60,
    window=1.0,
    limit_headers="none",
    latency_ms=15.0,
    latency_sigma=0.5,
    error_rate=0.03,
    unknown_rate=0.02,
    seed=7,
)


def write_sample_ids(path: Path, count: int, seed: int = 7) -> int:
    """A realistic messy ID file: comments, blanks, CRLF, duplicates and a few bad lines."""
    rng = random.Random(seed)
    venues = ["EEX", "ICE", "EPEX", "NORDPOOL", "CME", "ERCOT", "PJM", "CAISO"]
    ids = [f"{rng.choice(venues)}-2026-{n:06d}" for n in rng.sample(range(1, 999_999), count)]
    lines = ["# end-of-day fills export", ""]
    for index, trade_id in enumerate(ids):
        lines.append(trade_id + ("\r" if index % 7 == 0 else ""))
        if index % 50 == 10:
            lines.append("  " + ids[index // 2] + "  ")  # a duplicate, padded
    lines += ["../../etc/passwd", "TRD?x=1", "UNKNOWN-2026-000001"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return count


def run_demo(
    output_dir: Path,
    count: int,
    concurrency: int,
    on_progress: Callable[[RunStats], None] | None = None,
) -> tuple[RunReport, dict[str, int]]:
    """Start the simulator on loopback, run ``count`` IDs through the real ``run`` path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    ids_path = output_dir / "ids.txt"
    write_sample_ids(ids_path, count)
    batch_id = new_batch_id(SystemClock().wall())
    with SimulatedGateway.in_thread(DEMO_GATEWAY) as gateway:
        job = Job(
            settings=Settings(base_url=gateway.base_url, concurrency=concurrency),
            input_path=ids_path,
            output_path=output_dir / "trades.jsonl",
            failures_path=output_dir / "failed.jsonl",
            audit_path=output_dir / "audit.jsonl",
            batch_id=batch_id,
        )
        report = run_job(job, env={}, on_progress=on_progress)
    server = {
        "requests": gateway.stats.requests,
        "answered_429": gateway.stats.by_status.get(429, 0),
    }
    return report, server


def accounted_for(stats: RunStats) -> bool:
    """Every valid ID ended as a result or a failure: nothing pending, nothing lost."""
    return stats.pending == 0
