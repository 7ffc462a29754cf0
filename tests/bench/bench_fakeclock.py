"""Fake-clock batches against gateways that send no hint, with and without a penalty box,
and against gateways told by quota headers whose resets are rounded up to the second.

    python -m tests.bench.bench_fakeclock              # 8 seeds (a few seconds)
    python -m tests.bench.bench_fakeclock --seeds 2
    python -m tests.bench.bench_fakeclock --seeds 3 --trades 2000   # long batches, no hint

Each batch is ``_workers`` from ``tests/test_pacing.py`` (workers sharing one pacer and
one pause, as the fetcher drives them, on a simulated clock), for each seed at four
worker counts and latencies. A penalty box refuses any request that comes while the
gateway refuses, and restarts the refusal a window long from it, as
``trade-ingest simulate --penalty`` does. Printed per gateway: efficiency (ideal time
/ the batch's last send) on average and at its lowest, and over the batches whose rate
was learned from 429s (AIMD). The second table: gateways whose every answer tells the
limit, the remaining quota and a reset rounded up to a whole second (and a 429 a
Retry-After as long), as ``--limit-headers delta`` does: windows of a second or less and
buckets, which such resets all read as a second. Printed per gateway: efficiency on
average and at its lowest, the share of requests answered 429, and the batches that
found a window shorter than a second (``pacing.window_learned``, kind ``shorter``) or a
bucket (kind ``bucket``). The same seeds give the same figures on any machine, so two
commits compare run for run. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import statistics

from tests.test_pacing import _workers
from trade_ingest.simulator.limits import Admission, LimiterKind, RateLimiter, make_limiter

SHAPES: list[tuple[LimiterKind, int, float, float | None]] = [
    ("fixed", 10, 1.0, 0.5),
    ("fixed", 20, 1.0, 0.5),
    ("sliding", 20, 1.0, None),
    ("sliding", 30, 1.0, None),
    ("fixed", 40, 2.0, 0.5),
    ("token", 20, 1.0, None),
    ("fixed", 20, 10.0, 0.3),
]
WORKERS_AND_LATENCY = [(8, 0.01), (4, 0.03), (8, 0.05), (2, 0.005)]
TOKEN_BURST = 10
# Told by whole-second resets: (kind, limit, window, phase of a fixed window, burst).
TOLD_SHAPES: list[tuple[LimiterKind, int, float, float | None, int | None]] = [
    ("fixed", 4, 0.5, 0.3, None),
    ("fixed", 8, 0.5, 0.7, None),
    ("sliding", 5, 0.5, None, None),
    ("fixed", 4, 1.0, 0.5, None),
    ("fixed", 10, 1.0, 0.5, None),
    ("sliding", 4, 1.0, None, None),
    ("sliding", 10, 1.0, None, None),
    ("token", 20, 1.0, None, 5),
    ("token", 20, 1.0, None, 10),
    ("token", 40, 1.0, None, 5),
    ("fixed", 40, 2.0, 0.5, None),
]


class PenaltyBox:
    """``inner``'s limit, where a request that comes while refused restarts the refusal."""

    def __init__(self, inner: RateLimiter) -> None:
        self.inner, self.limit, self.window = inner, inner.limit, inner.window
        self._refused_until = -1.0

    def admit(self, now: float) -> Admission:
        if now < self._refused_until:
            self._refused_until = now + self.window
            return Admission(False, self.limit, 0, self.window)
        admission = self.inner.admit(now)
        if not admission.allowed:
            self._refused_until = max(self._refused_until, now + admission.reset_after)
        return admission


def _gateway(
    kind: LimiterKind, limit: int, window: float, phase: float | None, penalty: bool
) -> RateLimiter:
    burst = TOKEN_BURST if kind == "token" else None
    limiter = make_limiter(kind, limit, window, burst, phase)
    return PenaltyBox(limiter) if penalty else limiter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument(
        "--trades", type=int, default=0, help="each no-hint batch (default 200, 100 at 10 s)"
    )
    args = parser.parse_args()
    _unhinted(args.seeds, args.trades)
    print()
    _told(args.seeds)


def _unhinted(seeds: int, trades: int = 0) -> None:
    print(
        f"{'gateway (no hint)':20}{'penalty':>8}{'mean':>7}{'min':>6}{'AIMD batches':>14}{'their mean':>12}"
    )
    for kind, limit, window, phase in SHAPES:
        for penalty in (True, False):
            efficiencies, learned_by_aimd = [], []
            batch_trades = trades or (200 if window < 5.0 else 100)
            ideal = batch_trades * window / limit
            for seed in range(seeds):
                for workers, latency in WORKERS_AND_LATENCY:
                    gateway = _gateway(kind, limit, window, phase, penalty)
                    batch = _workers(
                        gateway, workers=workers, trades=batch_trades, latency=latency, seed=seed
                    )
                    efficiency = ideal / batch.sends[-1][0]
                    efficiencies.append(efficiency)
                    if any(event.fields.get("reason") == "slow_start" for _, event in batch.events):
                        learned_by_aimd.append(efficiency)
            aimd = f"{statistics.mean(learned_by_aimd):.3f}" if learned_by_aimd else "-"
            print(
                f"{f'{kind} {limit}/{window:g}':20}{'yes' if penalty else 'no':>8}"
                f"{statistics.mean(efficiencies):7.3f}{min(efficiencies):6.2f}"
                f"{f'{len(learned_by_aimd)}/{len(efficiencies)}':>14}{aimd:>12}",
                flush=True,
            )


def _told(seeds: int) -> None:
    print(f"{'gateway (whole-second resets)':31}{'mean':>7}{'min':>6}{'429':>7}"
          f"{'shorter':>9}{'bucket':>8}")  # fmt: skip
    for kind, limit, window, phase, burst in TOLD_SHAPES:
        efficiencies, refused, shorter, bucket = [], [], 0, 0
        trades = max(60, round(30 * limit / window))
        ideal = trades * window / limit
        for seed in range(seeds):
            for workers, latency in WORKERS_AND_LATENCY:
                gateway = make_limiter(kind, limit, window, burst, phase)
                batch = _workers(
                    gateway, workers=workers, trades=trades, latency=latency, seed=seed, told=True
                )
                efficiencies.append(ideal / batch.sends[-1][0])
                refused.append(sum(not ok for _, ok in batch.sends) / len(batch.sends))
                kinds = {event.fields.get("kind") for _, event in batch.events}
                shorter += "shorter" in kinds
                bucket += "bucket" in kinds
        runs = len(efficiencies)
        name = f"{kind} {limit}/{window:g}" + (f" burst {burst}" if burst else "")
        print(
            f"{name:31}{statistics.mean(efficiencies):7.3f}{min(efficiencies):6.2f}"
            f"{statistics.mean(refused):7.1%}{f'{shorter}/{runs}':>9}{f'{bucket}/{runs}':>8}",
            flush=True,
        )


if __name__ == "__main__":
    main()
