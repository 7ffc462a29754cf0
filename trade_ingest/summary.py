"""What a person sees on stderr: a progress bar on a terminal, and the end-of-run summary.

Only stderr: stdout may be the results stream of a pipeline. Colour follows
rich's rules, so ``NO_COLOR`` and a non-terminal stderr give plain text.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from trade_ingest.errors import ExitCode
from trade_ingest.pipeline import RunReport
from trade_ingest.stats import RunStats

EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every trade ingested",
    ExitCode.TRADES_FAILED: "the run finished but some trades failed (see the failures file)",
    ExitCode.USAGE: "usage error",
    ExitCode.NO_INPUT: "input file missing or unreadable",
    ExitCode.CANT_CREATE: "an output file cannot be created",
    ExitCode.IO_ERROR: "writing an output failed (disk full?)",
    ExitCode.TEMP_FAIL: "trades left to do (deferred, pending) or the output locked by another "
    "run: run again later",
    ExitCode.CONFIG: "bad configuration",
    ExitCode.INTERRUPTED: "interrupted (SIGINT)",
    ExitCode.TERMINATED: "terminated (SIGTERM)",
}


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class ProgressDisplay:
    """A live bar on a terminal; nothing at all otherwise (cron mail stays clean)."""

    def __init__(self, console: Console, enabled: bool, total: int | None = None) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled and console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]trades"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._task = self._progress.add_task("ingest", total=total, detail="")

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, stats: RunStats) -> None:
        if self._progress is None or self._task is None:
            return
        detail = f"ok {stats.ingested} · failed {stats.failed + stats.invalid}"
        if stats.deferred:
            detail += f" · deferred {stats.deferred}"
        completed = stats.done + stats.already_ingested + stats.duplicates
        self._progress.update(self._task, completed=completed, detail=detail)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds >= 0.01 else f"{seconds * 1000:.1f}ms"


def render_summary(report: RunReport) -> list[str]:
    """The summary as plain lines (rich markup only for emphasis)."""
    stats = report.stats
    lines = [
        f"[bold]trade-ingest[/] batch {report.batch_id}: {report.stop_reason} "
        f"in {stats.elapsed:.1f}s",
        f"  ingested {stats.ingested} · failed {stats.failed} · deferred {stats.deferred} · "
        f"invalid IDs {stats.invalid} · duplicates skipped {stats.duplicates} · "
        f"pending {stats.pending}",
    ]
    if stats.already_ingested:
        lines.append(
            f"  already in the results file (resumed): {stats.already_ingested}, not fetched again"
        )
    if stats.not_worth_retrying:
        lines.append(
            f"  failure records not worth retrying (invalid ID, 404, ...): "
            f"{stats.not_worth_retrying}, left alone"
        )
    if stats.failures_by_reason:
        reasons = ", ".join(f"{k} {v}" for k, v in stats.failures_by_reason.most_common())
        lines.append(f"  failures by reason: {reasons}")
    retries = sum(stats.retries_by_cause.values())
    by_cause = ", ".join(f"{k} {v}" for k, v in stats.retries_by_cause.most_common())
    lines.append(
        f"  attempts {stats.attempts} · retries {retries}" + (f" ({by_cause})" if by_cause else "")
    )
    if stats.responses_by_status:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(stats.responses_by_status.items()))
        lines.append(f"  responses: {statuses}")
    lines.append(
        f"  paused for rate limits: {stats.paused_seconds:.1f}s over {stats.pauses} pause(s)"
    )
    if stats.pool_timeouts:
        lines.append(
            f"  [yellow]pool timeouts: {stats.pool_timeouts}: our own connection pool was full "
            "(local capacity, not gateway throttling); raise pool_timeout or lower concurrency[/]"
        )
    latency = stats.latency
    if latency.count:
        lines.append(
            f"  latency p50 {_ms(latency.quantile(0.5))} · p90 {_ms(latency.quantile(0.9))} · "
            f"p99 {_ms(latency.quantile(0.99))} · max {_ms(latency.max)}"
        )
    rate = stats.ingested / stats.elapsed if stats.elapsed > 0 else 0.0
    lines.append(f"  throughput {rate:.1f} trades/s")
    paths = " · ".join(f"{k}: {v}" for k, v in report.paths.items() if v)
    if paths:
        lines.append(f"  {paths}")
    if report.audit_head:
        lines.append(f"  audit head {report.audit_head}")
    if report.message:
        lines.append(f"  [red]{report.message}[/]")
    code = report.exit_code
    lines.append(f"  exit {int(code)}: {EXIT_MEANINGS[code]}")
    return lines


def print_summary(console: Console, report: RunReport) -> None:
    for line in render_summary(report):
        console.print(line)
