"""``trade-ingest report``: what happened in a run, rebuilt from its audit log alone.

One streaming pass; memory is bounded by the run's length in minutes, its
concurrency (trades in flight) and the ``top`` slowest trades kept, never by
the number of events. ``build_report`` is pure (lines in, a value out);
``render_report`` draws it with rich.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from trade_ingest.stats import LatencyHistogram

# Upper bounds (ms) of the latency histogram's bars; the last bar is everything above.
LATENCY_BARS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SPARKS = "▁▂▃▄▅▆▇█"
# Events whose outcome ends a trade's story in a run.
_FINAL = {"trade.fetched", "trade.failed", "trade.pending"}


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class PauseSource:
    pauses: int = 0
    seconds: float = 0.0
    hints: Counter[str] = field(default_factory=Counter)


@dataclass
class AuditReport:
    """The figures of one audit log (all its runs)."""

    batches: list[str] = field(default_factory=list)
    events: int = 0
    unreadable_lines: int = 0
    started: float | None = None
    finished: float | None = None
    busy_seconds: float = 0.0
    concurrency: int | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    attempt_outcomes: Counter[str] = field(default_factory=Counter)
    retries_by_cause: Counter[str] = field(default_factory=Counter)
    pause_sources: dict[str, PauseSource] = field(default_factory=dict)
    paused_seconds: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    latency_total: float = 0.0
    latency_bars: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BARS_MS) + 1))
    fetched_per_minute: Counter[int] = field(default_factory=Counter)
    slowest: list[tuple[float, str, int, str]] = field(default_factory=list)
    rate_changes: int = 0
    last_rate: float | None = None
    pool_timeouts: int = 0
    stop_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def elapsed(self) -> float:
        return self.busy_seconds

    def diagnosis(self) -> list[str]:
        """Where the time went, most telling first."""
        found: list[str] = []
        elapsed = self.elapsed or 1e-9
        if self.pool_timeouts:
            found.append(
                f"local bottleneck: our own connection pool ran out {self.pool_timeouts} time(s) "
                f"(pool_timeout), not the gateway; lower concurrency ({self.concurrency}) or "
                "raise pool_timeout"
            )
        share = self.paused_seconds / elapsed
        if share >= 0.2:
            source = max(self.pause_sources.items(), key=lambda kv: kv[1].seconds)[0]
            found.append(
                f"gateway rate limit: the batch stood paused {share:.0%} of the time, mostly "
                f"for {source}"
            )
        retries = sum(self.retries_by_cause.values())
        if self.attempts and retries / self.attempts >= 0.1:
            cause = self.retries_by_cause.most_common(1)[0][0]
            found.append(
                f"gateway errors: {retries / self.attempts:.0%} of attempts were retried, "
                f"mostly {cause}"
            )
        fetched = self.outcomes["fetched"]
        if not found and fetched and self.concurrency and self.latency.count:
            rate = fetched / elapsed
            # Little's law: requests in flight on average = total time in requests / time.
            in_flight = self.latency_total / elapsed
            if self.last_rate is not None and rate >= 0.8 * self.last_rate:
                found.append(
                    f"paced: {rate:.1f} trades/s against a gateway rate of "
                    f"{self.last_rate:.1f}/s; the gateway's limit set the pace"
                )
            elif in_flight >= 0.6 * self.concurrency:
                found.append(
                    f"gateway latency: {in_flight:.1f} of {self.concurrency} requests in flight "
                    "on average; more concurrency would go faster if the gateway allows it"
                )
            else:
                found.append(
                    f"input or pacing: only {in_flight:.1f} of {self.concurrency} requests in "
                    "flight on average; the IDs arrived slower than the gateway answered, or "
                    "the batch was holding back"
                )
        if not found:
            found.append("no single bottleneck stands out")
        return found

    def as_dict(self, top: int) -> dict[str, Any]:
        def ms(seconds: float) -> float:
            return round(seconds * 1000, 2)

        return {
            "batches": self.batches,
            "events": self.events,
            "unreadable_lines": self.unreadable_lines,
            "elapsed_seconds": round(self.elapsed, 3),
            "concurrency": self.concurrency,
            "outcomes": dict(self.outcomes),
            "failures_by_reason": dict(self.failures_by_reason),
            "responses_by_status": dict(sorted(self.statuses.items())),
            "attempts": self.attempts,
            "retries_by_cause": dict(self.retries_by_cause),
            "paused_seconds": round(self.paused_seconds, 3),
            "pauses_by_source": {
                name: {
                    "pauses": source.pauses,
                    "seconds": round(source.seconds, 3),
                    "hints": dict(source.hints.most_common(5)),
                }
                for name, source in self.pause_sources.items()
            },
            "latency_ms": {
                "count": self.latency.count,
                "p50": ms(self.latency.quantile(0.5)),
                "p90": ms(self.latency.quantile(0.9)),
                "p99": ms(self.latency.quantile(0.99)),
                "max": ms(self.latency.max),
                "histogram": dict(zip(_bar_labels(), self.latency_bars, strict=True)),
            },
            "fetched_per_minute": {
                datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ"): count
                for minute, count in sorted(self.fetched_per_minute.items())
            },
            "throughput_per_s": round(self.outcomes["fetched"] / self.elapsed, 3)
            if self.elapsed
            else 0.0,
            "slowest_trades": [
                {"trade_id": t, "seconds": round(s, 3), "attempts": a, "outcome": o}
                for s, t, a, o in sorted(self.slowest, reverse=True)[:top]
            ],
            "pool_timeouts": self.pool_timeouts,
            "rate_changes": self.rate_changes,
            "last_rate_per_s": self.last_rate,
            "stop_reasons": dict(self.stop_reasons),
            "diagnosis": self.diagnosis(),
        }


def _bar_labels() -> list[str]:
    labels, low = [], 0
    for high in LATENCY_BARS_MS:
        labels.append(f"{low}-{high}ms")
        low = high
    labels.append(f">{low}ms")
    return labels


def build_report(lines: Iterable[bytes], top: int = 10) -> AuditReport:
    """Read every event once; keep only counters, histograms and the ``top`` slowest."""
    report = AuditReport()
    in_flight: dict[str, tuple[float, int]] = {}
    last_retry_hint: dict[tuple[str, int], str] = {}
    run_started: float | None = None
    for raw in lines:
        try:
            event = json.loads(raw)
            kind = event["event"]
            when = _epoch(event["timestamp"])
        except (ValueError, KeyError, TypeError):
            report.unreadable_lines += 1
            continue
        report.events += 1
        if report.started is None:
            report.started = when
        report.finished = when
        if kind == "trade.attempt":
            _attempt(report, event, when, in_flight)
        elif kind in _FINAL:
            _final(report, event, kind, when, in_flight, top)
        elif kind in ("trade.retry_scheduled", "trade.retry_released"):
            report.retries_by_cause[str(event.get("cause"))] += 1
            if "hint" in event:
                key = (str(event.get("trade_id")), int(event.get("attempt") or 0))
                last_retry_hint[key] = str(event["hint"])
                if len(last_retry_hint) > 10_000:
                    last_retry_hint.clear()
        elif kind == "batch.paused":
            source = report.pause_sources.setdefault(str(event.get("delay_source")), PauseSource())
            source.pauses += 1
            source.seconds += float(event.get("pause_s") or 0)
            key = (str(event.get("trade_id")), int(event.get("attempt") or 0))
            if key in last_retry_hint:
                source.hints[last_retry_hint.pop(key)] += 1
        elif kind == "batch.resumed":
            report.paused_seconds += float(event.get("paused_s") or 0)
        elif kind in ("pacing.rate_learned", "pacing.rate_changed"):
            report.rate_changes += 1
            rate = event.get("rate_per_s", event.get("to"))
            if isinstance(rate, int | float):
                report.last_rate = float(rate)
        elif kind == "trade.duplicate_skipped":
            report.outcomes["duplicate_skipped"] += 1
        elif kind == "trade.already_ingested":
            report.outcomes["already_ingested"] += 1
        elif kind == "batch.started":
            report.batches.append(str(event.get("batch_id")))
            settings = event.get("settings")
            if isinstance(settings, dict) and isinstance(settings.get("concurrency"), int):
                report.concurrency = settings["concurrency"]
            in_flight.clear()
            run_started = when
        elif kind == "batch.finished":
            report.stop_reasons[str(event.get("stop_reason"))] += 1
            if run_started is not None:
                report.busy_seconds += when - run_started
                run_started = None
    if run_started is not None and report.finished is not None:  # a killed run: up to its end
        report.busy_seconds += report.finished - run_started
    return report


def _attempt(
    report: AuditReport, event: dict[str, Any], when: float, in_flight: dict[str, tuple[float, int]]
) -> None:
    report.attempts += 1
    outcome = str(event.get("outcome"))
    report.attempt_outcomes[outcome] += 1
    if outcome == "pool_timeout":
        report.pool_timeouts += 1
    status = event.get("status")
    if status is not None:
        report.statuses[str(status)] += 1
    latency = float(event.get("latency_ms") or 0) / 1000
    report.latency.record(latency)
    report.latency_total += latency
    for index, bound in enumerate(LATENCY_BARS_MS):
        if latency * 1000 < bound:
            report.latency_bars[index] += 1
            break
    else:
        report.latency_bars[-1] += 1
    trade_id = str(event.get("trade_id"))
    first, attempts = in_flight.get(trade_id, (when - latency, 0))
    in_flight[trade_id] = (first, attempts + 1)


def _final(
    report: AuditReport,
    event: dict[str, Any],
    kind: str,
    when: float,
    in_flight: dict[str, tuple[float, int]],
    top: int,
) -> None:
    trade_id = str(event.get("trade_id"))
    if kind == "trade.fetched":
        report.outcomes["fetched"] += 1
        report.fetched_per_minute[int(when // 60)] += 1
        outcome = "fetched"
    elif kind == "trade.pending":
        report.outcomes["pending"] += 1
        outcome = "pending"
    else:
        reason = str(event.get("reason"))
        report.failures_by_reason[reason] += 1
        report.outcomes["failed"] += 1
        outcome = reason
    started = in_flight.pop(trade_id, None)
    if started is None:
        return
    entry = (when - started[0], trade_id, started[1], outcome)
    if len(report.slowest) < top:
        heapq.heappush(report.slowest, entry)
    elif entry > report.slowest[0]:
        heapq.heapreplace(report.slowest, entry)


def sparkline(values: list[int]) -> str:
    if not values:
        return ""
    peak = max(values) or 1
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[round(v / peak * top)] for v in values)


def render_report(console: Console, report: AuditReport, top: int = 10) -> None:
    """The report for a person: tables, a latency histogram and a per-minute sparkline."""
    data = report.as_dict(top)
    console.print(
        f"[bold]trade-ingest report[/]: {len(report.batches)} run(s) "
        f"({', '.join(report.batches[-3:])}{'...' if len(report.batches) > 3 else ''}), "
        f"{report.events} events, {report.elapsed:.1f}s busy"
    )
    for line in data["diagnosis"]:
        console.print(f"  [yellow]diagnosis:[/] {line}")
    outcomes = Table(title="outcomes", show_header=False, box=None)
    for name, count in report.outcomes.most_common():
        outcomes.add_row(name, str(count))
    for name, count in report.failures_by_reason.most_common():
        outcomes.add_row(f"  failed: {name}", str(count))
    for name, count in sorted(report.statuses.items()):
        outcomes.add_row(f"HTTP {name}", str(count))
    for name, count in report.retries_by_cause.most_common():
        outcomes.add_row(f"retried: {name}", str(count))
    console.print(outcomes)
    if report.pause_sources:
        pauses = Table(title=f"paused for rate limits: {report.paused_seconds:.1f}s")
        for column in ("source", "pauses", "seconds asked", "most common hints"):
            pauses.add_column(column)
        for name, source in sorted(report.pause_sources.items(), key=lambda kv: -kv[1].seconds):
            hints = ", ".join(f"{h!r} x{n}" for h, n in source.hints.most_common(3))
            pauses.add_row(name, str(source.pauses), f"{source.seconds:.1f}", hints)
        console.print(pauses)
    latency = data["latency_ms"]
    console.print(
        f"latency over {latency['count']} attempts: p50 {latency['p50']}ms · p90 "
        f"{latency['p90']}ms · p99 {latency['p99']}ms · max {latency['max']}ms"
    )
    peak = max(report.latency_bars) or 1
    for label, count in zip(_bar_labels(), report.latency_bars, strict=True):
        if count:
            console.print(f"  {label:>12} {'█' * max(1, count * 40 // peak):<40} {count}")
    minutes = sorted(report.fetched_per_minute.items())
    if minutes:
        first, last = minutes[0][0], minutes[-1][0]
        series = [report.fetched_per_minute.get(m, 0) for m in range(first, last + 1)]
        console.print(
            f"fetched per minute ({len(series)} min, peak {max(series)}): {sparkline(series)}"
        )
    console.print(f"throughput {data['throughput_per_s']} trades/s")
    if data["slowest_trades"]:
        slow = Table(title=f"slowest {len(data['slowest_trades'])} trades")
        for column in ("trade", "seconds", "attempts", "outcome"):
            slow.add_column(column)
        for row in data["slowest_trades"]:
            slow.add_row(
                row["trade_id"], f"{row['seconds']:.3f}", str(row["attempts"]), row["outcome"]
            )
        console.print(slow)
