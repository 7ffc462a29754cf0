"""Fake-clock batches against gateways that send no hint, with and without a penalty box.

    python -m tests.bench.bench_fakeclock              # 8 seeds (about 2 minutes)
    python -m tests.bench.bench_fakeclock --seeds 2

Each batch is ``_workers`` from ``tests/test_pacing.py`` (workers sharing one pacer and
one pause, as the fetcher drives them, on a simulated clock), for each seed at four
worker counts and latencies. A penalty box refuses any request that comes while the
gateway refuses, and restarts the refusal a window long from it, as
``trade-ingest simulate --penalty`` does. Printed per gateway: efficiency (ideal time
/ the batch's last send) on average and at its lowest, and over the batches whose rate
was learned from 429s (AIMD). The same seeds give the same figures on any machine, so
two commits compare run for run. Nothing is sent anywhere.
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
    args = parser.parse_args()
    print(
        f"{'gateway (no hint)':20}{'penalty':>8}{'mean':>7}{'min':>6}{'AIMD batches':>14}{'their mean':>12}"
    )
    for kind, limit, window, phase in SHAPES:
        for penalty in (True, False):
            efficiencies, learned_by_aimd = [], []
            trades = 200 if window < 5.0 else 100
            ideal = trades * window / limit
            for seed in range(args.seeds):
                for workers, latency in WORKERS_AND_LATENCY:
                    gateway = _gateway(kind, limit, window, phase, penalty)
                    batch = _workers(
                        gateway, workers=workers, trades=trades, latency=latency, seed=seed
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


if __name__ == "__main__":
    main()
