"""Throughput benchmark: CPU per trade and peak memory, trade-ingest beside the common recipes.

    python -m tests.bench.bench_throughput                       # 10k and 100k IDs
    python -m tests.bench.bench_throughput --sizes 10000,100000,1000000
    python -m tests.bench.bench_throughput --clients trade-ingest --sizes 1000000

The simulated gateway runs in its own process, with no rate limit and no
latency, so the client is the bottleneck. Each client runs in its own process
too, and ``wait4`` gives its own CPU time and peak RSS. Clients: trade-ingest
(results, failures and the hash-chained audit log written, as in production),
trade-ingest with ``http_transport = "aiohttp"`` (``trade-ingest/aiohttp``), optionally
with ``--no-uvloop`` (when uvloop is installed), and the plain recipes (semaphore + gather)
on aiohttp and on httpx. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable
CLIENTS = ("trade-ingest", "trade-ingest/aiohttp", "aiohttp", "httpx")


@dataclass
class Figures:
    client: str
    size: int
    wall: float
    cpu: float
    rss_mb: float
    written: int

    @property
    def cpu_ms_per_1000(self) -> float:
        return self.cpu / self.size * 1000 * 1000


def start_gateway() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [PYTHON, "-m", "trade_ingest", "simulate", "--port", "0", "--limit-headers", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, line.strip().rsplit(" ", 1)[-1]


def command(client: str, base_url: str, ids: Path, work: Path, concurrency: int) -> list[str]:
    if client.startswith("trade-ingest"):
        extra = ["--no-uvloop"] if "--no-uvloop" in client else []
        return [
            PYTHON, "-m", "trade_ingest", "run", str(ids), "--base-url", base_url,
            "-o", str(work / "out.jsonl"), "--failures", str(work / "failed.jsonl"),
            "--audit-log", str(work / "audit.jsonl"), "-c", str(concurrency), "-q", *extra,
        ]  # fmt: skip
    return [PYTHON, "-m", "tests.bench.recipes", client, base_url, str(ids),
            str(work / "out.jsonl"), str(concurrency)]  # fmt: skip


def environment(client: str) -> dict[str, str]:
    env = dict(os.environ)
    if client.startswith("trade-ingest/aiohttp"):
        env["TRADE_INGEST_HTTP_TRANSPORT"] = "aiohttp"
    return env


def run_client(client: str, size: int, ids: Path, concurrency: int) -> Figures:
    gateway, base_url = start_gateway()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tp-") as directory:
            work = Path(directory)
            started = time.perf_counter()
            process = subprocess.Popen(
                command(client, base_url, ids, work, concurrency),
                stderr=subprocess.DEVNULL,
                env=environment(client),
            )
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - started
            out = work / "out.jsonl"
            written = sum(1 for _ in out.open("rb")) if out.exists() else 0
    finally:
        gateway.terminate()
        gateway.wait()
    return Figures(
        client, size, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, written
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    clients = options.clients.split(",")
    print(f"{'client':<26}{'IDs':>9}{'wall s':>9}{'trades/s':>10}{'CPU s':>8}"
          f"{'CPU ms/1k':>11}{'peak RSS MB':>13}{'written':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-ids-") as directory:
        for size in sizes:
            ids = Path(directory) / f"ids-{size}.txt"
            with ids.open("w") as handle:
                for n in range(size):
                    handle.write(f"EEX-{n:08d}\n")
            rows = [run_client(client, size, ids, options.concurrency) for client in clients]
            for row in rows:
                print(f"{row.client:<26}{row.size:>9}{row.wall:>9.1f}{row.size / row.wall:>10.0f}"
                      f"{row.cpu:>8.1f}{row.cpu_ms_per_1000:>11.0f}{row.rss_mb:>13.0f}"
                      f"{row.written:>9}")  # fmt: skip
            base = next((r for r in rows if r.client == "aiohttp"), None)
            if base is not None:
                for row in rows:
                    if row is not base:
                        print(f"  {row.client}: CPU per trade x{row.cpu / base.cpu:.2f} of "
                              f"aiohttp's, peak RSS x{row.rss_mb / base.rss_mb:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
