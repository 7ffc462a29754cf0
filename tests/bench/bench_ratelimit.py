"""Rate-limit benchmark: trade-ingest beside the naive recipe, scenario by scenario.

    python -m tests.bench.bench_ratelimit            # the full matrix (about 17 minutes)
    python -m tests.bench.bench_ratelimit --quick    # fewer trades, a subset
    python -m tests.bench.bench_ratelimit --only penalty
    python -m tests.bench.bench_ratelimit --repeat 3     # each scenario three times, median ratio
    python -m tests.bench.bench_ratelimit --beyond       # gateways beyond the matrix (~6 minutes)
    python -m tests.bench.bench_ratelimit --sweep 40 --no-naive   # 40 random gateway shapes

Each scenario starts the simulated gateway in its own process on 127.0.0.1,
runs `trade-ingest run` (a subprocess, so its CPU time is its own), then the
naive baseline against a fresh gateway with the same settings. Printed per
client: efficiency (ideal time / wall time, ideal = trades / the limit's
sustained rate), the best efficiency any client could reach (``best``: see
``earliest.py``; a fixed window's first turn or a bucket's burst can put it
above 1), trades/s, the share of requests answered 429 (overall, and
for trade-ingest after its first discovery of the rate), trades lost or
duplicated (must be 0), failures, CPU seconds. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from tests.bench.earliest import earliest_busy
from trade_ingest.simulator import GatewayConfig

PYTHON = sys.executable
SEED = 11
CONCURRENCY = 8


@dataclass(frozen=True)
class Scenario:
    name: str
    gateway: GatewayConfig
    run_args: tuple[str, ...] = ()
    trades: int | None = None  # instead of --trades, for a gateway too slow for them

    @property
    def rate(self) -> float:
        """The limit's sustained rate, requests per second."""
        return (self.gateway.rate_limit or 0) / self.gateway.window

    def simulate_args(self) -> list[str]:
        """The same gateway as ``trade-ingest simulate`` flags, field by field."""
        args = ["--seed", str(SEED)]
        for spec in fields(GatewayConfig):
            value = getattr(self.gateway, spec.name)
            if spec.name in ("host", "port", "seed") or value is None:
                continue
            flag = "--" + spec.name.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            else:
                args += [flag, str(value)]
        return args


def _gateway(**overrides: Any) -> GatewayConfig:
    defaults: dict[str, Any] = {"rate_limit": 40, "window": 2.0, "latency_ms": 10.0,
                                "latency_sigma": 0.5}  # fmt: skip
    if overrides.get("limiter", "fixed") == "fixed":
        # Both clients meet the same turns: the first halfway through a window
        # (on the clock, the run before decides where a run starts in it).
        defaults["window_phase"] = 0.5
    return GatewayConfig(**(defaults | overrides))


def matrix() -> list[Scenario]:
    token = {"limiter": "token", "rate_limit": 20, "window": 1.0, "burst": 10}
    scenarios = []
    for limiter in ("fixed", "sliding", "token"):
        shape: dict[str, Any] = token if limiter == "token" else {"limiter": limiter}
        for headers, retry_after in (
            ("delta", "seconds"),
            ("epoch", "http-date"),
            ("ietf", "seconds"),
            ("none", "seconds"),
            ("none", "none"),
        ):
            scenarios.append(
                Scenario(
                    f"{limiter}/{headers}/ra-{retry_after}",
                    _gateway(**shape, limit_headers=headers, retry_after=retry_after),
                )
            )
    scenarios += [
        Scenario("skew+300s/epoch/http-date",
                 _gateway(limit_headers="epoch", retry_after="http-date", clock_offset=300.0)),
        Scenario("skew-300s/none/http-date",
                 _gateway(limit_headers="none", retry_after="http-date", clock_offset=-300.0)),
        Scenario("penalty/fixed/delta", _gateway(penalty=True)),
        Scenario("penalty/fixed/none", _gateway(penalty=True, limit_headers="none")),
        Scenario("penalty/token/none", _gateway(**token, penalty=True, limit_headers="none")),
        Scenario("latency-80ms-heavy-tail/sliding/ietf",
                 _gateway(limiter="sliding", limit_headers="ietf", latency_ms=80.0,
                          latency_sigma=1.0)),
        Scenario("faults-5xx-bursts/fixed/delta", _gateway(error_rate=0.03, error_burst=4)),
        Scenario("faults-drops/sliding/none",
                 _gateway(limiter="sliding", limit_headers="none", drop_rate=0.02)),
        Scenario("configured-20/s/fixed/none", _gateway(limit_headers="none"),
                 run_args=("--rate-limit", "20/s")),
    ]  # fmt: skip
    return scenarios


def beyond() -> list[Scenario]:
    """Gateways beyond the matrix: one-second windows, small buckets, and fixed windows
    that turn on the clock (``window_phase`` None: ``best`` is then not known, as where a
    run starts in the window decides it)."""
    on_the_clock = {"limiter": "fixed", "window_phase": None, "limit_headers": "epoch",
                    "retry_after": "http-date"}  # fmt: skip
    return [
        Scenario("fixed-10/1s/delta", _gateway(rate_limit=10, window=1.0)),
        Scenario("sliding-10/1s/delta", _gateway(limiter="sliding", rate_limit=10, window=1.0)),
        Scenario("token-20/s-burst-5/delta",
                 _gateway(limiter="token", rate_limit=20, window=1.0, burst=5)),
        Scenario("token-10/s-burst-1/delta",
                 _gateway(limiter="token", rate_limit=10, window=1.0, burst=1), trades=40),
        Scenario("sliding-20/1s/epoch/http-date",
                 _gateway(limiter="sliding", rate_limit=20, window=1.0, limit_headers="epoch",
                          retry_after="http-date")),
        Scenario("clock-fixed-20/1s/epoch/http-date",
                 _gateway(**on_the_clock, rate_limit=20, window=1.0)),
        Scenario("clock-fixed-50/5s/epoch/http-date",
                 _gateway(**on_the_clock, rate_limit=50, window=5.0)),
    ]  # fmt: skip


def sweep(count: int, seed: int) -> list[Scenario]:
    """``count`` gateways drawn at random (seeded): any limiter, quota, window, header and
    Retry-After style, clock offset, penalty, latency and faults, each with enough trades
    for three windows or more, and a run the limit allows in about 4-25 s. Not tuned for:
    where the matrix's shapes are what the pacing was measured on, these find the rest."""
    rng = random.Random(seed)
    scenarios = []
    for number in range(count):
        limiter = rng.choice(("fixed", "sliding", "token"))
        window = rng.choice((0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 10.0))
        rate = math.exp(rng.uniform(math.log(0.3), math.log(40.0)))
        quota = max(1, round(rate * window))
        shape: dict[str, Any] = {"limiter": limiter, "rate_limit": quota, "window": window}
        if limiter == "token":
            shape["burst"] = rng.randint(1, max(1, quota))
        elif limiter == "fixed":
            shape["window_phase"] = rng.choice((None, round(rng.uniform(0.05, 1.0), 2)))
        shape["limit_headers"] = rng.choice(("delta", "epoch", "ietf", "none"))
        shape["retry_after"] = rng.choice(("seconds", "seconds", "http-date", "none"))
        if rng.random() < 0.25:
            shape["clock_offset"] = round(rng.uniform(-400.0, 400.0), 1)
        shape["penalty"] = rng.random() < 0.25
        shape["latency_ms"] = round(math.exp(rng.uniform(0.0, math.log(150.0))), 1)
        shape["latency_sigma"] = round(rng.uniform(0.0, 1.0), 2)
        if rng.random() < 0.2:
            shape["error_rate"], shape["error_burst"] = 0.02, rng.randint(1, 4)
        if rng.random() < 0.15:
            shape["drop_rate"] = 0.02
        # Three bursts' worth at least, 12-25 s of the limit's time.
        sustained = quota / window
        least = 3 * (shape.get("burst") or quota) + 1
        trades = max(4, int(min(max(least, 12 * sustained), 25 * sustained)))
        gateway = _gateway(**shape)
        name = (
            f"#{number} {limiter[:3]} {quota}/{window:g}s"
            + (f" b{shape['burst']}" if limiter == "token" else "")
            + f" {shape['limit_headers']}/ra-{shape['retry_after']}"
            + (" pen" if shape["penalty"] else "")
            + (f" skew{shape['clock_offset']:+.0f}" if "clock_offset" in shape else "")
            + (" 5xx" if "error_rate" in shape else "")
            + (" drop" if "drop_rate" in shape else "")
        )
        scenarios.append(Scenario(name, gateway, trades=trades))
    return scenarios


@dataclass
class Outcome:
    wall: float
    cpu: float
    results: int
    failures: int
    lost: int
    duplicated: int
    server: dict[str, Any]
    timed_out: bool = False
    after_discovery_429: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    failed_for: dict[str, int] = field(default_factory=dict)


class Gateway:
    """The simulator in its own process."""

    def __init__(self, scenario: Scenario) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "trade_ingest", "simulate", "--port", "0", *scenario.simulate_args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.base_url = line.strip().rsplit(" ", 1)[-1]
        if not self.base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"simulator did not start: {line!r}")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.base_url + "/_stats", timeout=5).json())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _run_timed(argv: list[str], timeout: float) -> tuple[float, float, bool]:
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timed_out = False
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_utime + usage.ru_stime, timed_out


def _ids_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["trade_id"] for line in path.read_text().splitlines() if line]


def failure_reasons(path: Path) -> dict[str, int]:
    """How many trades the failures file at ``path`` gave up, by reason (ours write a
    ``reason``; the naive recipe only a ``status``)."""
    if not path.exists():
        return {}
    reasons: dict[str, int] = {}
    for line in path.read_text().splitlines():
        if line:
            record = json.loads(line)
            reason = str(record.get("reason") or f"status {record.get('status')}")
            reasons[reason] = reasons.get(reason, 0) + 1
    return dict(sorted(reasons.items()))


def _account(ids: list[str], out: Path, failed: Path) -> tuple[int, int, int, int]:
    results, failures = _ids_in(out), _ids_in(failed)
    duplicated = len(results) - len(set(results)) + len(set(results) & set(failures))
    lost = len(set(ids) - set(results) - set(failures))
    return len(results), len(failures), lost, duplicated


def _after_discovery_429(audit: Path) -> float | None:
    """Share of requests answered 429 once trade-ingest had learned the rate."""
    learned = False
    attempts = limited = 0
    for line in audit.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "pacing.rate_learned":
            learned = True
        elif learned and event["event"] == "trade.attempt":
            attempts += 1
            limited += event.get("status") == 429
    return limited / attempts if attempts else None


def run_ours(scenario: Scenario, ids: list[str], work: Path, timeout: float) -> Outcome:
    ids_path, out, failed, audit = (work / n for n in ("ids", "ours.jsonl", "ours-f", "audit"))
    gateway = Gateway(scenario)
    try:
        argv = [
            PYTHON, "-m", "trade_ingest", "run", str(ids_path), "--base-url", gateway.base_url,
            "-o", str(out), "--failures", str(failed), "--audit-log", str(audit), "-q",
            "-c", str(CONCURRENCY), "--max-attempts", "10", *scenario.run_args,
        ]  # fmt: skip
        wall, cpu, timed_out = _run_timed(argv, timeout)
        server = gateway.stats()
    finally:
        gateway.stop()
    results, failures, lost, duplicated = _account(ids, out, failed)
    return Outcome(wall, cpu, results, failures, lost, duplicated, server, timed_out,
                   _after_discovery_429(audit), failed_for=failure_reasons(failed))  # fmt: skip


def run_naive(scenario: Scenario, ids: list[str], work: Path, timeout: float) -> Outcome:
    ids_path, out, failed = (work / n for n in ("ids", "naive.jsonl", "naive-f"))
    gateway = Gateway(scenario)
    try:
        argv = [PYTHON, "-m", "tests.bench.naive_client", gateway.base_url, str(ids_path),
                str(out), str(failed), str(CONCURRENCY)]  # fmt: skip
        wall, cpu, timed_out = _run_timed(argv, timeout)
        server = gateway.stats()
    finally:
        gateway.stop()
    results, failures, lost, duplicated = _account(ids, out, failed)
    return Outcome(wall, cpu, results, failures, lost, duplicated, server, timed_out,
                   failed_for=failure_reasons(failed))  # fmt: skip


def _efficiency(scenario: Scenario, trades: int, o: Outcome) -> float:
    # The gateway's view: from the batch's first request to its last answer,
    # so interpreter start-up is not charged to the pacing.
    return min(o.results, trades) / scenario.rate / _busy(o)


def _best(scenario: Scenario, trades: int, faults_met: int = 0) -> float:
    """``best`` for ``trades``; ``faults_met``: the 5xx answers a client met, sent as that
    many more requests. (The gateway counts a 5xx against its limit, as it answers after
    admitting; it drops a connection before, so drops cost no quota.)"""
    gateway = scenario.gateway
    if gateway.limiter == "fixed" and gateway.window_phase is None:
        return math.nan
    busy = earliest_busy(gateway, trades + faults_met, CONCURRENCY, SEED)
    return trades / scenario.rate / busy


def _faults_met(o: Outcome) -> int:
    return sum(int(n) for status, n in o.server["by_status"].items() if int(status) >= 500)


def _best_for(scenario: Scenario, trades: int, o: Outcome, best: float) -> float:
    """``best``, or for a gateway with 5xx, held to the 5xx answers this client met."""
    return _best(scenario, trades, _faults_met(o)) if scenario.gateway.error_rate else best


def _best_column(scenario: Scenario, best: float) -> str:
    return f"{best:4.2f}f" if scenario.gateway.error_rate else f"{best:5.2f}"


def _row(name: str, who: str, scenario: Scenario, trades: int, o: Outcome, best: str) -> str:
    efficiency = _efficiency(scenario, trades, o)
    requests = o.server["requests"] or 1
    share_429 = o.server["by_status"].get("429", 0) / requests
    after = "" if o.after_discovery_429 is None else f"{o.after_discovery_429:6.1%}"
    flag = " TIMEOUT" if o.timed_out else ""
    # The benchmark's files are gone once it ends: a failure's reason is told here.
    why = "".join(f" {reason}: {count}" for reason, count in o.failed_for.items())
    return (
        f"{name:<38} {who:<6} {efficiency:5.2f} {best:>5} {o.results / o.wall:7.2f} {scenario.rate:6.1f} "
        f"{share_429:6.1%} {after:>7} {o.lost:>4} {o.duplicated:>4} {o.failures:>5} "
        f"{o.server.get('during_retry_after', 0):>5} {o.cpu:6.2f} {o.wall:7.1f}{flag}"
        + (f"  (failed:{why})" if why else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="100 trades, one row per limiter")
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    parser.add_argument("--no-naive", action="store_true", help="skip the baseline")
    parser.add_argument("--beyond", action="store_true", help="gateways beyond the matrix")
    parser.add_argument("--sweep", type=int, default=0, help="this many random gateways")
    parser.add_argument("--sweep-seed", type=int, default=1, help="the sweep's draw")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each scenario (single runs vary ~±0.15)"
    )
    args = parser.parse_args()
    if args.sweep:
        drawn = sweep(args.sweep, args.sweep_seed)
    else:
        drawn = beyond() if args.beyond else matrix()
    scenarios = [s for s in drawn if args.only in s.name]
    if args.quick:
        scenarios = [s for s in scenarios if s.name.endswith("ra-seconds") or "penalty" in s.name]
    header = (
        f"{'scenario':<38} {'client':<6} {'eff':>5} {'best':>5} {'tr/s':>7} {'limit':>6} {'429':>6} "
        f"{'429*':>7} {'lost':>4} {'dup':>4} {'fail':>5} {'inRA':>5} {'cpu_s':>6} {'wall_s':>7}"
    )
    default_trades = 100 if args.quick else args.trades
    print(f"{default_trades} trades a scenario unless named; "
          "eff = (trades / limit rate) / time the gateway was busy "
          "(first request to last answer); "
          "429* = share answered 429 after trade-ingest learned the rate; "
          "inRA = requests the gateway received while its Retry-After was in force; "
          "best = eff of a client sending each request the moment the gateway would admit it "
          "(its own limiter and seeded latencies; see tests/bench/earliest.py); "
          "best ending in f: against 5xx, that client's 5xx answers counted as as many "
          "more requests")  # fmt: skip
    print(header)
    print("-" * len(header))
    ratios = []
    for scenario in scenarios:
        trades = scenario.trades or default_trades
        ids = [f"EEX-2026-{n:06d}" for n in range(trades)]
        best = _best(scenario, trades)
        runs: list[tuple[float, float, int, int, float, float]] = []
        for round_number in range(args.repeat):
            name = scenario.name if args.repeat == 1 else f"{scenario.name} #{round_number + 1}"
            if scenario.trades:
                name = f"{name} ({trades})"
            with tempfile.TemporaryDirectory(prefix="ti-bench-") as tmp:
                work = Path(tmp)
                (work / "ids").write_text("\n".join(ids) + "\n")
                timeout = max(60.0, 8 * trades / scenario.rate)
                ours = run_ours(scenario, ids, work, timeout)
                ours_best = _best_for(scenario, trades, ours, best)
                print(_row(name, "ours", scenario, trades, ours, _best_column(scenario, ours_best)),
                      flush=True)  # fmt: skip
                if args.no_naive:
                    continue
                naive = run_naive(scenario, ids, work, timeout)
                naive_best = _best_for(scenario, trades, naive, best)
                shown = _best_column(scenario, naive_best) if naive_best != best else ""
                print(_row("", "naive", scenario, trades, naive, shown), flush=True)
                busy = _busy(naive) / _busy(ours)
                ours_share, naive_share = (_efficiency(scenario, trades, o) / of
                                           for o, of in ((ours, ours_best), (naive, naive_best)))  # fmt: skip
                runs.append((naive.wall / ours.wall, busy, ours.results, naive.results,
                             ours_share, naive_share))  # fmt: skip
        if runs:
            wall, busy, ours_share, naive_share = (
                statistics.median(r[column] for r in runs) for column in (0, 1, 4, 5)
            )
            done = (min(r[2] for r in runs), min(r[3] for r in runs))
            ratios.append((scenario.name, wall, busy, ours_share, naive_share, *done))
    if ratios:
        print()
        print("speed-up of trade-ingest over the naive recipe (medians): wall = naive wall / ours "
              "wall, start-up included; gateway = the same for the time the gateway was busy; "
              "of best = each client's eff / best (1.00: no client could have finished sooner)")  # fmt: skip
        for name, wall, busy, ours_share, naive_share, ours_done, naive_done in ratios:
            print(
                f"  {name:<38} wall x{wall:5.2f}  gateway x{busy:5.2f}   of best: ours "
                f"{ours_share:4.2f}, naive {naive_share:4.2f}   "
                f"trades done: ours {ours_done}, naive {naive_done}"
            )


def _busy(outcome: Outcome) -> float:
    return float(outcome.server.get("busy_seconds") or outcome.wall)


if __name__ == "__main__":
    main()
