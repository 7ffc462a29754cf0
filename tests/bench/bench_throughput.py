"""Throughput benchmark: CPU per trade and peak memory, trade-ingest beside the common recipes.

    python -m tests.bench.bench_throughput                       # 10k and 100k IDs
    python -m tests.bench.bench_throughput --sizes 10000,100000,1000000
    python -m tests.bench.bench_throughput --clients trade-ingest/aiohttp --sizes 1000000
    python -m tests.bench.bench_throughput --sizes 20000 --repeat 3   # medians, on a noisy machine

The simulated gateway runs in its own process, with no rate limit and no
latency, so the client is the bottleneck. Each client runs in its own process
too, and ``wait4`` gives its own CPU time and peak RSS. Nothing leaves loopback.
Run it under ``nice -n 19`` on a shared machine: CPU seconds are what it compares.

Clients (rows):

  trade-ingest/httpcore   ``trade-ingest run``, httpx's own transport; results, failures and
                          the hash-chained audit log written as in production
  trade-ingest/aiohttp    the same with ``http_transport = "aiohttp"``
  trade-ingest/aiohttp/fetch-only
                          the same, with the audit log and results made free (events dropped
                          unbuilt, each result an empty line; ``recipes.fetch_only``): fetching
                          alone, pipeline and pacing included
  aiohttp                 the plain recipe: aiohttp, one task per ID, semaphore + gather
  httpx                   the plain recipe on httpx.AsyncClient (httpcore)
  httpx/aiohttp           the plain recipe on httpx.AsyncClient over trade-ingest's aiohttp
                          transport: the floor of httpx's API on that transport

trade-ingest runs on uvloop when it is installed (its default); ``+asyncio`` after a
trade-ingest client runs it on asyncio's loop (``--no-uvloop``). The recipes run on asyncio's
loop, as they are usually copied; ``+uvloop`` after a recipe runs it on uvloop.
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
CLIENTS = (
    "trade-ingest/httpcore",
    "trade-ingest/aiohttp",
    "trade-ingest/aiohttp/fetch-only",
    "aiohttp",
    "aiohttp+uvloop",
    "httpx/aiohttp",
    "httpx/aiohttp+uvloop",
    "httpx",
)
# Ratios are printed against these rows, when they ran.
BASELINES = ("aiohttp", "httpx/aiohttp+uvloop")


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
    name, _, loop = client.partition("+")
    if name.startswith("trade-ingest"):
        args = [
            "run", str(ids), "--base-url", base_url,
            "-o", str(work / "out.jsonl"), "--failures", str(work / "failed.jsonl"),
            "--audit-log", str(work / "audit.jsonl"), "-c", str(concurrency), "-q",
            *(["--no-uvloop"] if loop == "asyncio" else []),
        ]  # fmt: skip
        if name.endswith("/fetch-only"):
            return [PYTHON, "-m", "tests.bench.recipes", "fetch-only", *args]
        return [PYTHON, "-m", "trade_ingest", *args]
    return [PYTHON, "-m", "tests.bench.recipes", name, base_url, str(ids),
            str(work / "out.jsonl"), str(concurrency), *([loop] if loop else [])]  # fmt: skip


def environment(client: str) -> dict[str, str]:
    env = dict(os.environ)
    if client.startswith("trade-ingest/aiohttp"):
        env["TRADE_INGEST_HTTP_TRANSPORT"] = "aiohttp"
    elif client.startswith("trade-ingest/httpcore"):
        env["TRADE_INGEST_HTTP_TRANSPORT"] = "httpcore"
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


def median_run(runs: list[Figures]) -> Figures:
    """The run of median CPU (of an even count, the lower middle one)."""
    return sorted(runs, key=lambda run: run.cpu)[(len(runs) - 1) // 2]


def print_ratios(rows: list[Figures]) -> None:
    by_name = {row.client: row for row in rows}
    for name in BASELINES:
        base = by_name.get(name)
        if base is None:
            continue
        print(f"  CPU per trade and peak RSS as multiples of {name}'s:")
        for row in rows:
            if row is not base:
                print(f"    {row.client:<34} CPU x{row.cpu / base.cpu:.2f}"
                      f"   RSS x{row.rss_mb / base.rss_mb:.2f}")  # fmt: skip
    for loop in ("", "+asyncio"):
        full = by_name.get("trade-ingest/aiohttp" + loop)
        alone = by_name.get("trade-ingest/aiohttp/fetch-only" + loop)
        if full is not None and alone is not None:
            print(f"  audit log + results over fetching alone (trade-ingest/aiohttp{loop}): "
                  f"+{(full.cpu / alone.cpu - 1) * 100:.0f}% CPU per trade")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each client; the run of median CPU is shown"
    )
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    clients = options.clients.split(",")
    print(f"concurrency {options.concurrency}; CPU = user + system seconds of the client process; "
          f"median of {options.repeat} run(s) each")  # fmt: skip
    print(f"{'client':<34}{'IDs':>9}{'wall s':>9}{'trades/s':>10}{'CPU s':>8}"
          f"{'CPU ms/1k':>11}{'peak RSS MB':>13}{'written':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-ids-") as directory:
        for size in sizes:
            ids = Path(directory) / f"ids-{size}.txt"
            with ids.open("w") as handle:
                for n in range(size):
                    handle.write(f"EEX-{n:08d}\n")
            runs: dict[str, list[Figures]] = {client: [] for client in clients}
            for _ in range(options.repeat):  # interleaved, so a noisy minute hits every client
                for client in clients:
                    runs[client].append(run_client(client, size, ids, options.concurrency))
            rows = [median_run(runs[client]) for client in clients]
            for row in rows:
                print(f"{row.client:<34}{row.size:>9}{row.wall:>9.1f}"
                      f"{row.size / row.wall:>10.0f}{row.cpu:>8.1f}{row.cpu_ms_per_1000:>11.0f}"
                      f"{row.rss_mb:>13.0f}{row.written:>9}", flush=True)  # fmt: skip
            print_ratios(rows)


if __name__ == "__main__":
    main()
