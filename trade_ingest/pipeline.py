"""The batch: a reader thread -> a bounded queue -> a fixed pool of workers -> the sinks.

Input is streamed: at most a few read chunks and ``2 x concurrency`` IDs are
held at once, however long the input. Each trade ends in exactly one place:
the results, the failures, or (when the run is stopped) pending for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import httpx

from trade_ingest import __version__
from trade_ingest.audit import AuditLog
from trade_ingest.clock import Clock, SystemClock
from trade_ingest.config import Settings, load_token
from trade_ingest.errors import (
    ExitCode,
    InputNotFound,
    OutputError,
    OutputWriteError,
)
from trade_ingest.fetch import Failed, Fetched, TradeFetcher, build_client
from trade_ingest.ids import DuplicateId, IdParser, IdRules, InvalidId, LineSplitter, TradeId
from trade_ingest.pacing import RateGate
from trade_ingest.sinks import JsonlWriter, OutputClosed, failure_line, result_line
from trade_ingest.stats import RunStats

# How long in-flight trades may take to finish after SIGINT/SIGTERM.
DEFAULT_GRACE_SECONDS = 5.0
_READ_SIZE = 64 * 1024
_CHUNKS_IN_FLIGHT = 4
_END = object()
# Failures that a later run will most likely turn into results: exit 75, not 1.
DEFERRING_REASONS = frozenset({"deferred", "retry_budget_exhausted"})

IdItem = TradeId | InvalidId | DuplicateId


def new_batch_id(wall: float) -> str:
    """``20261128T203255Z-1a2b3c``: sortable by start time, unique across hosts."""
    stamp = datetime.fromtimestamp(wall, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Job:
    """One ``run``: settings plus where to read and write. ``None`` paths mean stdin/stdout."""

    settings: Settings
    input_path: Path | None
    output_path: Path | None
    failures_path: Path
    audit_path: Path
    batch_id: str
    grace_seconds: float = DEFAULT_GRACE_SECONDS


@dataclass
class RunReport:
    batch_id: str
    stats: RunStats
    exit_code: ExitCode
    stop_reason: str
    message: str = ""
    paths: dict[str, str] = field(default_factory=dict)


class StopRequest:
    """Set by a signal handler or a broken output; workers take no new trade once set."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.event = asyncio.Event()
        self.error: Exception | None = None

    def set(self, reason: str, error: Exception | None = None) -> None:
        if self.reason is None:
            self.reason = reason
            self.error = error
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.reason is not None


class _IdFeed:
    """Reads the input on a daemon thread, so a slow or silent stdin never blocks the loop.

    Each read yields however many lines arrived, so a trickling pipe is
    served at once and a file is read in large chunks. A semaphore bounds the
    chunks waiting to be consumed.
    """

    def __init__(self, source: BinaryIO, rules: IdRules, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._parser = IdParser(rules)
        self._loop = loop
        self._chunks: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(_CHUNKS_IN_FLIGHT)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="trade-ingest-input", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._room.release()

    def _put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is over
            self._loop.call_soon_threadsafe(self._chunks.put_nowait, item)

    def _read(self) -> None:
        splitter = LineSplitter(self._parser.max_line_bytes)
        read = getattr(self._source, "read1", self._source.read)
        try:
            while not self._closed.is_set():
                data = read(_READ_SIZE)
                items = [
                    item
                    for raw, cut in splitter.feed(data)
                    if (item := self._parser.parse(raw, cut)) is not None
                ]
                self._room.acquire()
                if self._closed.is_set():
                    return
                if items:
                    self._put(items)
                if not data:
                    self._put(_END)
                    return
        except Exception as exc:  # handed to the loop, which reports it
            self._put(exc)

    async def items(self) -> Iterator[IdItem] | None:
        chunk = await self._chunks.get()
        if chunk is not _END:
            self._room.release()
        if isinstance(chunk, Exception):
            raise InputNotFound(f"reading the input failed: {chunk}")
        if chunk is _END:
            return None
        return iter(cast(list[IdItem], chunk))


class Batch:
    """Runs one job's trades through the workers and records every outcome."""

    def __init__(
        self,
        job: Job,
        *,
        results: JsonlWriter,
        failures: JsonlWriter,
        audit: AuditLog,
        client: httpx.AsyncClient,
        clock: Clock,
        rng: random.Random,
        on_progress: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.job = job
        self.stats = RunStats()
        self.stop = StopRequest()
        self._results = results
        self._failures = failures
        self._audit = audit
        self._clock = clock
        self._on_progress = on_progress
        self._gate = RateGate(clock, rng, job.settings.release_jitter)
        deadline = job.settings.deadline_seconds()
        self._fetcher = TradeFetcher(
            client,
            job.settings,
            self._gate,
            clock,
            rng,
            audit,
            self.stats,
            deadline_at=None if deadline is None else clock.monotonic() + deadline,
        )
        self._work: asyncio.Queue[TradeId | None] = asyncio.Queue(job.settings.concurrency * 2)

    def _write(self, writer: JsonlWriter, line: bytes) -> None:
        try:
            writer.write(line)
        except OutputClosed as exc:
            self.stop.set("output_closed", exc)
            raise
        except OutputWriteError as exc:
            self.stop.set("write_error", exc)
            raise

    def _record(self, outcome: Fetched | Failed) -> None:
        batch_id = self.job.batch_id
        if isinstance(outcome, Fetched):
            line = result_line(
                outcome.trade_id, batch_id, outcome.fetched_at, outcome.attempts, outcome.body
            )
            self._write(self._results, line)
            self.stats.ingested += 1
        else:
            line = failure_line(
                outcome.trade_id,
                batch_id,
                self._clock.wall(),
                reason=outcome.reason,
                status=outcome.status,
                attempts=outcome.attempts,
                error=outcome.error,
            )
            self._write(self._failures, line)
            self.stats.failures_by_reason[outcome.reason] += 1
            if outcome.reason in DEFERRING_REASONS:
                self.stats.deferred += 1
            else:
                self.stats.failed += 1
        if self._on_progress is not None:
            self._on_progress(self.stats)

    def _record_invalid(self, item: InvalidId) -> None:
        self._audit.emit(
            "trade.failed",
            trade_id=item.raw,
            attempt=0,
            reason="invalid_id",
            line=item.line,
            error=item.why,
        )
        line = failure_line(
            item.raw,
            self.job.batch_id,
            self._clock.wall(),
            reason="invalid_id",
            status=None,
            attempts=0,
            error=item.why,
            line=item.line,
        )
        self._write(self._failures, line)
        self.stats.invalid += 1
        self.stats.failures_by_reason["invalid_id"] += 1
        if self._on_progress is not None:
            self._on_progress(self.stats)

    async def _produce(self, feed: _IdFeed) -> None:
        try:
            while not self.stop.is_set and (items := await feed.items()) is not None:
                for item in items:
                    if isinstance(item, TradeId):
                        await self._work.put(item)
                    elif isinstance(item, InvalidId):
                        self._record_invalid(item)
                    else:
                        self.stats.duplicates += 1
                        self._audit.emit(
                            "trade.duplicate_skipped",
                            trade_id=item.value,
                            line=item.line,
                            first_line=item.first_line,
                        )
                    if self.stop.is_set:
                        break
        except (OutputClosed, OutputWriteError):
            pass
        finally:
            for _ in range(self.job.settings.concurrency):
                await self._work.put(None)

    async def _work_loop(self) -> None:
        while (item := await self._work.get()) is not None:
            if self.stop.is_set:
                self.stats.pending += 1
                continue
            if self._fetcher.past_deadline(self._clock.monotonic()):
                outcome: Fetched | Failed = self._fetcher.deadline_failure(item.value)
            else:
                outcome = await self._fetcher.fetch(item.value)
            try:
                self._record(outcome)
            except (OutputClosed, OutputWriteError):
                self.stats.pending += 1

    async def run(self, source: BinaryIO) -> None:
        feed = _IdFeed(
            source,
            IdRules.from_settings(self.job.settings.max_id_length, self.job.settings.id_pattern),
            asyncio.get_running_loop(),
        )
        feed.start()
        started = self._clock.monotonic()
        producer = asyncio.create_task(self._produce(feed))
        workers = [
            asyncio.create_task(self._work_loop()) for _ in range(self.job.settings.concurrency)
        ]
        stopping: asyncio.Future[Any] = asyncio.create_task(self.stop.event.wait())
        try:
            done_waiting: asyncio.Future[Any] = asyncio.gather(producer, *workers)
            await asyncio.wait({done_waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not done_waiting.done():
                # Stopped: in-flight trades get a grace period, then are left pending.
                _, unfinished = await asyncio.wait(workers, timeout=self.job.grace_seconds)
                self.stats.pending += len(unfinished)
                for task in (*unfinished, producer):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await done_waiting
            else:
                await done_waiting
        finally:
            feed.close()
            stopping.cancel()
            self.stats.paused_seconds = self._gate.paused_seconds
            self.stats.pauses = self._gate.pauses
            self.stats.elapsed = self._clock.monotonic() - started


def exit_code_for(stats: RunStats, stop_reason: str) -> ExitCode:
    """The documented exit code for how a run ended."""
    if stop_reason == "interrupted":
        return ExitCode.INTERRUPTED
    if stop_reason == "terminated":
        return ExitCode.TERMINATED
    if stop_reason == "write_error":
        return ExitCode.IO_ERROR
    if stop_reason == "output_closed" or stats.deferred or stats.pending:
        return ExitCode.TEMP_FAIL
    if stats.failed or stats.invalid:
        return ExitCode.TRADES_FAILED
    return ExitCode.OK


def _open_input(path: Path | None) -> BinaryIO:
    if path is None:
        return sys.stdin.buffer
    try:
        if path.is_dir():
            raise InputNotFound(f"input {path} is a directory; give a file of trade IDs or -")
        return path.open("rb")
    except FileNotFoundError:
        raise InputNotFound(
            f"input file {path} not found; check the path, or use - for stdin"
        ) from None
    except OSError as exc:
        raise InputNotFound(f"cannot read input file {path}: {exc.strerror}") from None


def _open_audit(path: Path) -> TextIO:
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise OutputError(
            f"cannot create audit log {path}: {exc.strerror}; check the path and its permissions"
        ) from None


async def _run_async(
    job: Job,
    source: BinaryIO,
    results: JsonlWriter,
    failures: JsonlWriter,
    audit: AuditLog,
    token: str | None,
    clock: Clock,
    rng: random.Random,
    on_progress: Callable[[RunStats], None] | None,
) -> tuple[RunStats, str, Exception | None]:
    async with build_client(job.settings, token) as client:
        batch = Batch(
            job,
            results=results,
            failures=failures,
            audit=audit,
            client=client,
            clock=clock,
            rng=rng,
            on_progress=on_progress,
        )
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for signum, reason in ((signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, _on_signal, batch, reason)
                handled.append(signum)
        try:
            await batch.run(source)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
        return batch.stats, batch.stop.reason or "completed", batch.stop.error


def _on_signal(batch: Batch, reason: str) -> None:
    if batch.stop.is_set and batch.stop.reason in ("interrupted", "terminated"):
        # A second signal: stop waiting for in-flight trades. Lines are whole
        # (one write each), so nothing torn is left behind.
        os._exit(ExitCode.INTERRUPTED if reason == "interrupted" else ExitCode.TERMINATED)
    batch.stop.set(reason)


def run_job(
    job: Job,
    *,
    env: dict[str, str] | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunReport:
    """Run ``job`` to the end; raises ``IngestError`` for what a user must fix first."""
    environ = dict(os.environ) if env is None else env
    clock = clock or SystemClock()
    rng = rng or random.Random()
    token = load_token(job.settings, environ)
    source = _open_input(job.input_path)
    results = failures = None
    audit_stream: TextIO | None = None
    try:
        results = JsonlWriter(job.output_path, what="results")
        failures = JsonlWriter(job.failures_path, what="failures", lazy=True)
        audit_stream = _open_audit(job.audit_path)
        audit = AuditLog(audit_stream, job.batch_id, clock, secrets=[token] if token else [])
        audit.emit(
            "batch.started",
            version=__version__,
            pid=os.getpid(),
            input=str(job.input_path) if job.input_path else "-",
            output=str(job.output_path) if job.output_path else "-",
            failures=str(job.failures_path),
            settings=job.settings.redacted(),
            authenticated=token is not None,
        )
        stats, reason, error = asyncio.run(
            _run_async(job, source, results, failures, audit, token, clock, rng, on_progress)
        )
        code = exit_code_for(stats, reason)
        audit.emit("batch.finished", stop_reason=reason, exit_code=int(code), **stats.counts())
        return RunReport(
            job.batch_id,
            stats,
            code,
            reason,
            message=str(error) if isinstance(error, OutputWriteError) else "",
            paths={
                "results": str(job.output_path) if job.output_path else "-",
                "failures": str(job.failures_path) if failures.lines else "",
                "audit": str(job.audit_path),
            },
        )
    finally:
        if job.input_path is not None:
            source.close()
        for writer in (results, failures):
            if writer is not None:
                writer.close()
        if audit_stream is not None:
            audit_stream.close()
