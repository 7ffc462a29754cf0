"""Run statistics in constant memory: counts, retries by cause, a latency histogram."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


class LatencyHistogram:
    """Log-bucketed latencies (about 2% relative error) so memory stays flat at any size."""

    _GROWTH = 1.02
    _FLOOR = 1e-4  # 0.1 ms: anything faster shares the first bucket

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0

    def _bucket(self, seconds: float) -> int:
        return max(0, math.ceil(math.log(max(seconds, self._FLOOR) / self._FLOOR, self._GROWTH)))

    def record(self, seconds: float) -> None:
        self._buckets[self._bucket(seconds)] += 1
        self.count += 1
        self.max = max(self.max, seconds)

    def quantile(self, q: float) -> float:
        """The latency below which a share ``q`` of samples fall (0 when empty)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(self.max, self._FLOOR * self._GROWTH**bucket)
        return self.max


@dataclass
class RunStats:
    """What a run did, for the summary and the ``batch.finished`` event."""

    ingested: int = 0
    failed: int = 0
    deferred: int = 0
    invalid: int = 0
    duplicates: int = 0
    # Skipped because the results file (the ledger) already holds them.
    already_ingested: int = 0
    # --retry-failed: failure records whose reason is not worth a retry (404, invalid ID).
    not_worth_retrying: int = 0
    pending: int = 0
    attempts: int = 0
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    retries_by_cause: Counter[str] = field(default_factory=Counter)
    responses_by_status: Counter[int] = field(default_factory=Counter)
    pool_timeouts: int = 0
    paused_seconds: float = 0.0
    pauses: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        """Trades with a final outcome in this run (result or failure record)."""
        return self.ingested + self.failed + self.deferred + self.invalid

    def counts(self) -> dict[str, object]:
        return {
            "ingested": self.ingested,
            "failed": self.failed,
            "deferred": self.deferred,
            "invalid_id": self.invalid,
            "duplicates_skipped": self.duplicates,
            "already_ingested": self.already_ingested,
            "not_worth_retrying": self.not_worth_retrying,
            "pending": self.pending,
            "attempts": self.attempts,
            "retries_by_cause": dict(self.retries_by_cause),
            "failures_by_reason": dict(self.failures_by_reason),
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "pool_timeouts": self.pool_timeouts,
            "paused_seconds": round(self.paused_seconds, 3),
            "pauses": self.pauses,
            "latency_ms": {
                name: round(self.latency.quantile(q) * 1000, 2)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "elapsed_seconds": round(self.elapsed, 3),
        }
