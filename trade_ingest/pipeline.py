"""The batch: a reader thread -> a bounded queue -> a fixed pool of workers -> the sinks.

Input is streamed: at most a few read chunks and ``2 x concurrency`` IDs are
held at once, however long the input. Each trade ends in exactly one place:
the results, the failures, or (when the run is stopped) pending for the next run.

With a results file, a run holds its lock, reads it as the ledger (trades
already there are skipped), and fsyncs results in batches before the audit
log calls them committed; the manifest beside it records every run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import importlib
import os
import random
import secrets
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO, cast

import httpx

from trade_ingest import __version__
from trade_ingest.audit import AuditLog, read_chain_head, utc_rfc3339
from trade_ingest.clock import Clock, SystemClock
from trade_ingest.config import Settings, load_token
from trade_ingest.errors import (
    ConfigError,
    ExitCode,
    IngestError,
    InputNotFound,
    LockHeld,
    LockWaitInterrupted,
    OutputError,
    OutputWriteError,
    UsageError,
)
from trade_ingest.fetch import (
    Failed,
    Fetched,
    HeldBack,
    TradeFetcher,
    build_client,
    tls_verification,
)
from trade_ingest.ids import (
    DuplicateId,
    HashingReader,
    IdParser,
    IdRules,
    InvalidId,
    LineSplitter,
    RetryableFailures,
    TradeId,
)
from trade_ingest.pacing import RateGate
from trade_ingest.sinks import (
    JsonlWriter,
    Ledger,
    Manifest,
    OutputClosed,
    OutputLock,
    TornTail,
    cut_torn_tail,
    failure_line,
    open_ledger,
    result_line,
    try_lock,
)
from trade_ingest.stats import RunStats

# Results are fsync'd, and a ``batch.committed`` event written, after this many
# records or this many seconds, whichever comes first, and at the end.
COMMIT_EVERY_LINES = 1000
COMMIT_INTERVAL_SECONDS = 1.0
# Result lines and audit events are written in batches (audit first, then results, so
# the log always describes a result before it exists): after this many held results
# or this many seconds. A SIGKILL loses at most that much, which the next run fetches.
FLUSH_EVERY_LINES = 256
FLUSH_INTERVAL_SECONDS = 0.05
LOCK_POLL_SECONDS = 0.25
_READ_SIZE = 64 * 1024
_CHUNKS_IN_FLIGHT = 4
_END = object()
# Failures that a later run will most likely turn into results: exit 75, not 1.
DEFERRING_REASONS = frozenset({"deferred", "retry_budget_exhausted"})

IdItem = TradeId | InvalidId | DuplicateId


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


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
    # Skip trades already in the results file (the ledger); False refuses a non-empty one.
    resume: bool = True
    # Wait for another run's lock on the output instead of exiting 75.
    wait_lock: bool = False
    # The input is a failures file: fetch the trades in it worth retrying.
    retry_failed: bool = False


@dataclass
class RunReport:
    batch_id: str
    stats: RunStats
    exit_code: ExitCode
    stop_reason: str
    message: str = ""
    paths: dict[str, str] = field(default_factory=dict)
    # The hash of the run's last audit event: keep it somewhere else (cron mail, syslog).
    audit_head: str = ""


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

    def __init__(self, source: Readable, rules: IdRules, loop: asyncio.AbstractEventLoop) -> None:
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

    async def items(self) -> list[IdItem] | None:
        chunk = await self._chunks.get()
        if chunk is not _END:
            self._room.release()
        if isinstance(chunk, IngestError):
            raise chunk
        if isinstance(chunk, Exception):
            raise InputNotFound(f"reading the input failed: {chunk}")
        if chunk is _END:
            return None
        return cast(list[IdItem], chunk)


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
        ledger: Ledger | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.job = job
        self.stats = RunStats()
        self.stop = StopRequest()
        self._ledger = ledger
        self._uncommitted = 0
        self._committed_at = clock.monotonic()
        self._commit_task: asyncio.Task[None] | None = None
        self._held_ids: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
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
        # Trades whose next retry waits for the retry budget, oldest first.
        self._held_back: collections.deque[HeldBack] = collections.deque()
        self._workers_reading = job.settings.concurrency

    def _write(self, writer: JsonlWriter, line: bytes) -> None:
        try:
            writer.write(line)
        except OutputClosed as exc:
            self.stop.set("output_closed", exc)
            raise
        except OutputWriteError as exc:
            self.stop.set("write_error", exc)
            raise
        self._written(1)

    def flush(self) -> None:
        """Write the held audit events, then the held results; count results once written.

        If either write fails, the held results are not in the file (a failed write is
        cut back) and their trades are recorded as pending.
        """
        try:
            self._audit.flush()
            written = self._results.flush()
        except (OutputClosed, OutputWriteError) as exc:
            reason = "output_closed" if isinstance(exc, OutputClosed) else "write_error"
            self.stop.set(reason, exc)
            self._results.discard()
            lost, self._held_ids = self._held_ids, []
            for trade_id in lost:
                self._record_pending(trade_id)
            return
        if written:
            self._held_ids.clear()
            self.stats.ingested += written
            self._written(written)
            if self._on_progress is not None:
                self._on_progress(self.stats)

    def _tick(self) -> None:
        self.flush()
        self._flush_timer = asyncio.get_running_loop().call_later(
            FLUSH_INTERVAL_SECONDS, self._tick
        )

    def _written(self, lines: int) -> None:
        self._uncommitted += lines
        if self._commit_task is None and (
            self._uncommitted >= COMMIT_EVERY_LINES
            or self._clock.monotonic() - self._committed_at >= COMMIT_INTERVAL_SECONDS
        ):
            self._commit_task = asyncio.get_running_loop().create_task(self._commit_later())

    def _sync_files(self) -> None:
        self._results.sync()
        self._failures.sync()

    def _emit_committed(self, results: tuple[int, int, str], failures: int, final: bool) -> None:
        self._audit.emit(
            "batch.committed",
            results_lines=results[0],
            results_bytes=results[1] if self._results.path is not None else None,
            results_sha256=results[2],
            failures_lines=failures,
            durable=self._results.path is not None,
            final=final,
        )

    async def _commit_later(self) -> None:
        """fsync on a thread, so the loop keeps serving; then the audit log says committed."""
        self.flush()
        results = (self._results.lines, self._results.offset, self._results.digest.hexdigest())
        failures = self._failures.lines
        self._uncommitted = 0
        try:
            await asyncio.to_thread(self._sync_files)
            self._emit_committed(results, failures, final=False)
        except OutputWriteError as exc:
            self.stop.set("write_error", exc)
        finally:
            self._committed_at = self._clock.monotonic()
            self._commit_task = None

    def commit(self) -> None:
        """The final commit: everything written is on disk before the run reports it."""
        self.flush()
        self._sync_files()
        self._uncommitted = 0
        results = (self._results.lines, self._results.offset, self._results.digest.hexdigest())
        self._emit_committed(results, self._failures.lines, final=True)

    def _record_pending(self, trade_id: str) -> None:
        """A trade taken from the input but not finished: recorded, for the next run."""
        self.stats.pending += 1
        with contextlib.suppress(OutputClosed, OutputWriteError):
            self._audit.emit("trade.pending", trade_id=trade_id, stop_reason=self.stop.reason)
            self._failures.write(
                failure_line(
                    trade_id,
                    self.job.batch_id,
                    self._clock.wall(),
                    reason="pending",
                    status=None,
                    attempts=0,
                    error=f"not finished when the run stopped ({self.stop.reason}); "
                    "run again to fetch it",
                )
            )

    def _record(self, outcome: Fetched | Failed | HeldBack) -> None:
        """A result is held for the next flush; a failure is written at once; a trade held
        back for the retry budget waits in ``_held_back``."""
        if isinstance(outcome, HeldBack):
            self._held_back.append(outcome)
            return
        self._fetcher.pacer.backlog -= 1
        batch_id = self.job.batch_id
        if isinstance(outcome, Fetched):
            line = result_line(
                outcome.trade_id, batch_id, outcome.fetched_at, outcome.attempts, outcome.body
            )
            self._results.buffer(line)
            self._held_ids.append(outcome.trade_id)
            if self._results.buffered >= FLUSH_EVERY_LINES:
                self.flush()
            return
        line = failure_line(
            outcome.trade_id,
            batch_id,
            self._clock.wall(),
            reason=outcome.reason,
            status=outcome.status,
            attempts=outcome.attempts,
            # The gateway's own words can carry a reflected secret: same redaction as the log.
            error=self._audit.redactor.scrub(outcome.error),
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
                self._fetcher.pacer.backlog += sum(
                    isinstance(item, TradeId)
                    and (self._ledger is None or item.value not in self._ledger)
                    for item in items
                )
                for item in items:
                    if isinstance(item, TradeId):
                        if self._ledger is not None and item.value in self._ledger:
                            self.stats.already_ingested += 1
                            self._audit.emit(
                                "trade.already_ingested", trade_id=item.value, line=item.line
                            )
                        else:
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
        except asyncio.CancelledError:
            # Cancelled with the workers (a stop past its grace, or the loop shutting down
            # after a bug): nobody is left to tell, and waiting for room in a full queue
            # would hang that shutdown for good, deaf to signals.
            raise
        except BaseException:
            await self._end_work()
            raise
        await self._end_work()

    async def _end_work(self) -> None:
        """One end-of-work marker a worker, once there is room for each."""
        for _ in range(self.job.settings.concurrency):
            await self._work.put(None)

    async def _work_loop(self) -> None:
        while True:
            if self._held_back and not self.stop.is_set and self._fetcher.budget_allows_retry():
                await self._take_up(self._held_back.popleft())
                continue
            if (item := await self._work.get()) is None:
                break
            if self.stop.is_set:
                self._record_pending(item.value)
                continue
            await self._take_up(item)
        self._workers_reading -= 1
        # The input is done. Held-back trades get what the budget allows; the last
        # worker to finish gives up the rest, as no more first attempts will grow it.
        while self._held_back and not self.stop.is_set:
            if self._fetcher.budget_allows_retry():
                await self._take_up(self._held_back.popleft())
            elif self._workers_reading:
                return
            else:
                self._record(self._fetcher.give_up_held(self._held_back.popleft()))

    async def _take_up(self, item: TradeId | HeldBack) -> None:
        """Fetch a new trade, or a held-back one where it stopped, and record the outcome."""
        trade_id = item.value if isinstance(item, TradeId) else item.trade_id
        try:
            if self._fetcher.past_deadline(self._clock.monotonic()):
                outcome: Fetched | Failed | HeldBack = self._fetcher.deadline_failure(trade_id)
            elif isinstance(item, TradeId):
                outcome = await self._fetcher.fetch(trade_id)
            else:
                outcome = await self._fetcher.release(item)
            self._record(outcome)
        except OutputWriteError as exc:  # the audit log or an output could not be written
            self.stop.set("write_error", exc)
            self._record_pending(trade_id)
        except OutputClosed:
            self._record_pending(trade_id)
        except asyncio.CancelledError:  # the grace period after a signal ran out
            self._record_pending(trade_id)
            raise

    async def run(self, source: Readable) -> None:
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
        self._tick()
        try:
            done_waiting: asyncio.Future[Any] = asyncio.gather(producer, *workers)
            await asyncio.wait({done_waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not done_waiting.done():
                # Stopped: in-flight trades get a grace period, then are left pending.
                grace = self.job.settings.shutdown_grace
                _, unfinished = await asyncio.wait(workers, timeout=grace)
                for task in (*unfinished, producer):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await done_waiting
                while not self._work.empty():
                    if (queued := self._work.get_nowait()) is not None:
                        self._record_pending(queued.value)
            else:
                await done_waiting
        except BaseException:
            # A bug in one task: the others stop here, their trades left pending, while the
            # client is still open to close their connections (not as the loop shuts down).
            for task in (producer, *workers):
                task.cancel()
            await asyncio.gather(producer, *workers, return_exceptions=True)
            raise
        finally:
            # Stopped (or a bug) before their budget came: for the next run.
            while self._held_back:
                self._record_pending(self._held_back.popleft().trade_id)
            feed.close()
            stopping.cancel()
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self.flush()
            if self._commit_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._commit_task
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


def _wait_for_lock(
    try_acquire: Callable[[], bool], job: Job, clock: Clock, what: str, holder: Callable[[], str]
) -> None:
    """Take a lock now or raise ``LockHeld`` (exit 75); ``--wait-lock`` polls until the deadline."""
    deadline = job.settings.deadline_seconds()
    give_up_at = None if deadline is None else clock.monotonic() + deadline
    try:
        while not try_acquire():
            if not job.wait_lock or (give_up_at is not None and clock.monotonic() >= give_up_at):
                waited = " (waited until the deadline)" if job.wait_lock else ""
                raise LockHeld(
                    f"{what} is being written by another run ({holder()}){waited}; "
                    "try again later, or pass --wait-lock to wait for it"
                )
            time.sleep(LOCK_POLL_SECONDS)
    except KeyboardInterrupt:
        raise LockWaitInterrupted(f"interrupted while waiting for the lock on {what}") from None


def acquire_lock(job: Job, output: Path, clock: Clock) -> OutputLock:
    """The results file's lock (see ``_wait_for_lock``)."""
    lock = OutputLock(output)
    holder = {
        "pid": os.getpid(),
        "batch_id": job.batch_id,
        "since": datetime.fromtimestamp(clock.wall(), UTC).isoformat(timespec="seconds"),
    }
    _wait_for_lock(lambda: lock.try_acquire(holder), job, clock, str(output), lock.holder)
    return lock


def _open_audit(job: Job, clock: Clock) -> TextIO:
    """The audit log, opened to append and locked: two runs must not fork its hash chain."""
    path = job.audit_path
    try:
        stream = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise OutputError(
            f"cannot create audit log {path}: {exc.strerror}; check the path and its permissions"
        ) from None
    try:
        _wait_for_lock(
            lambda: try_lock(stream.fileno(), str(path)),
            job,
            clock,
            f"audit log {path}",
            lambda: "another trade-ingest process",
        )
    except BaseException:
        stream.close()
        raise
    return stream


@dataclass
class _Outputs:
    """The files of one run, opened in order and closed in reverse, whatever happens."""

    results: JsonlWriter | None = None
    failures: JsonlWriter | None = None
    audit_stream: TextIO | None = None
    lock: OutputLock | None = None
    audit: AuditLog | None = None

    def close(self) -> None:
        for writer in (self.results, self.failures):
            if writer is not None:
                writer.close()
        if self.audit is not None:
            with contextlib.suppress(IngestError):
                self.audit.flush()
        if self.audit_stream is not None:
            with contextlib.suppress(OSError):
                self.audit_stream.close()
        if self.lock is not None:
            self.lock.release()


def _is_ledger_file(path: Path) -> bool:
    """A regular file (or one to create) can be a ledger; /dev/stdout or a FIFO cannot."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # let opening it report the problem


def _file_sha256(path: Path | None) -> str | None:
    """The input file's hash at the start (stdin: None; its hash is in ``batch.finished``)."""
    if path is None or not _is_ledger_file(path):
        return None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _torn_fields(torn: TornTail) -> dict[str, object]:
    return {"offset": torn.offset, "bytes_cut": torn.length, "sha256": torn.sha256}


async def _run_async(
    job: Job,
    source: Readable,
    results: JsonlWriter,
    failures: JsonlWriter,
    audit: AuditLog,
    ledger: Ledger | None,
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
            ledger=ledger,
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
            try:
                batch.commit()
            except OutputWriteError as exc:
                batch.stop.set("write_error", exc)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
                # What is left (seal the audit log, the manifest) takes milliseconds: a
                # signal now lets it finish; a second one exits at once.
                signal.signal(signum, _after_the_batch)
        return batch.stats, batch.stop.reason or "completed", batch.stop.error


_late_signals: list[int] = []


class _SignalRestorer:
    """Puts back the SIGINT/SIGTERM handlers a run found, when it ends."""

    def __init__(self) -> None:
        _late_signals.clear()
        self._handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self._handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def __call__(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)


def _after_the_batch(signum: int, frame: object) -> None:
    if _late_signals:
        os._exit(ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED)
    _late_signals.append(signum)


def _on_signal(batch: Batch, reason: str) -> None:
    if batch.stop.is_set and batch.stop.reason in ("interrupted", "terminated"):
        # A second signal: stop waiting for in-flight trades, but write what is held
        # first. Each write is whole lines, made between two steps of the loop, so
        # none is left torn.
        batch.flush()
        os._exit(ExitCode.INTERRUPTED if reason == "interrupted" else ExitCode.TERMINATED)
    batch.stop.set(reason)


def _refuse_reading_what_is_written(job: Job) -> None:
    """Reading the file this run appends to would feed the run its own records."""
    if job.input_path is None:
        return
    for written in (job.failures_path, job.output_path, job.audit_path):
        with contextlib.suppress(OSError):
            if written is not None and os.path.samefile(job.input_path, written):
                raise UsageError(
                    f"{job.input_path} is both the input and an output of this run; "
                    "write the new records to another file"
                )


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for, or when ``auto`` finds it installed; else asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")  # optional: not a dependency
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "setting 'event_loop' is uvloop, but uvloop is not installed; "
                'install it or set event_loop = "auto"'
            ) from None
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def _previous_input(runs: list[dict[str, Any]]) -> str | None:
    """The input hash of the last run that read its input to the end."""
    for record in reversed(runs):
        if record.get("record") == "run.finished" and record.get("input_read_to_end"):
            value = record.get("input_sha256")
            return value if isinstance(value, str) else None
    return None


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
    tls_verification(job.settings)  # a bad CA bundle is a config error before any file is touched
    _refuse_reading_what_is_written(job)
    raw_source = _open_input(job.input_path)
    reader = HashingReader(raw_source)
    source: Readable = reader
    if job.retry_failed:
        source = RetryableFailures(reader, str(job.input_path or "stdin"))
    files = _Outputs()
    restore_signals = _SignalRestorer()
    ledger: Ledger | None = None
    manifest: Manifest | None = None
    runs: list[dict[str, Any]] = []
    try:
        if job.output_path is not None and _is_ledger_file(job.output_path):
            files.lock = acquire_lock(job, job.output_path, clock)
            ledger = open_ledger(job.output_path)
            if not job.resume and ledger.lines:
                raise OutputError(
                    f"results file {job.output_path} already holds {ledger.lines} trades and "
                    "--no-resume was given; resume (the default) or write to a new --output"
                )
            manifest = Manifest(job.output_path)
            runs = manifest.previous_runs()
        failures_torn = cut_torn_tail(job.failures_path)
        files.results = JsonlWriter(job.output_path, what="results")
        files.failures = JsonlWriter(job.failures_path, what="failures", lazy=True)
        files.audit_stream = _open_audit(job, clock)
        audit_torn = cut_torn_tail(job.audit_path)
        chain_start = read_chain_head(job.audit_path)
        audit_key = environ.get(job.settings.audit_key_env, "").encode() or None
        audit = AuditLog(
            files.audit_stream,
            job.batch_id,
            clock,
            secrets=[s for s in (token, audit_key and audit_key.decode()) if s],
            start=chain_start,
            key=audit_key,
            hold=True,
        )
        files.audit = audit
        input_name = str(job.input_path) if job.input_path else "-"
        audit.emit(
            "batch.started",
            version=__version__,
            pid=os.getpid(),
            input=input_name,
            input_kind="failures" if job.retry_failed else "trade_ids",
            output=str(job.output_path) if job.output_path else "-",
            failures=str(job.failures_path),
            settings=job.settings.redacted(),
            authenticated=token is not None,
            input_sha256=_file_sha256(job.input_path),
            hash_alg=audit.hash_alg,
            previous_head=chain_start.head if chain_start.next_seq else None,
        )
        for path, torn in ((job.failures_path, failures_torn), (job.audit_path, audit_torn)):
            if torn is not None:
                audit.emit("file.torn_line_cut", path=str(path), **_torn_fields(torn))
        if ledger is not None and manifest is not None:
            if ledger.torn is not None:
                audit.emit("file.torn_line_cut", path=str(ledger.path), **_torn_fields(ledger.torn))
            starts = [r for r in runs if r.get("record") == "run.started"]
            finished = {r.get("batch_id") for r in runs if r.get("record") == "run.finished"}
            previous = starts[-1].get("batch_id") if starts else None
            audit.emit(
                "ledger.opened",
                path=str(ledger.path),
                trades=len(ledger),
                lines=ledger.lines,
                previous_batch_id=previous,
                previous_run_finished=previous in finished if previous else None,
            )
            manifest.append(
                {
                    "record": "run.started",
                    "batch_id": job.batch_id,
                    "started_at": utc_rfc3339(clock.wall()),
                    "version": __version__,
                    "input": input_name,
                    "input_kind": "failures" if job.retry_failed else "trade_ids",
                    "settings": job.settings.redacted(),
                    "ledger_trades": len(ledger),
                    "torn_line_cut": _torn_fields(ledger.torn) if ledger.torn else None,
                    "previous_batch_id": previous,
                    "previous_run_finished": previous in finished if previous else None,
                }
            )
        try:
            with asyncio.Runner(loop_factory=loop_factory(job.settings.event_loop)) as runner:
                stats, reason, error = runner.run(
                    _run_async(
                        job,
                        source,
                        files.results,
                        files.failures,
                        audit,
                        ledger,
                        token,
                        clock,
                        rng,
                        on_progress,
                    )
                )
        except IngestError as exc:
            # Seal the run even so: the chain then says how and why it ended.
            with contextlib.suppress(IngestError):
                audit.emit(
                    "batch.finished",
                    stop_reason="error",
                    exit_code=int(exc.exit_code),
                    error=str(exc),
                    first_seq=audit.first_seq,
                    events=audit.events_written + 1,
                )
            raise
        if isinstance(source, RetryableFailures):
            stats.not_worth_retrying = source.skipped
        code = exit_code_for(stats, reason)
        previous_input = _previous_input(runs)
        input_hash = reader.hexdigest()
        input_fields = {
            "input_sha256": input_hash,
            "input_bytes": reader.bytes_read,
            "input_read_to_end": reader.at_end,
            "input_changed": None if previous_input is None else previous_input != input_hash,
        }
        audit.emit(
            "batch.finished",
            stop_reason=reason,
            exit_code=int(code),
            **input_fields,
            **stats.counts(),
            first_seq=audit.first_seq,
            events=audit.events_written + 1,
        )
        audit.sync()
        if manifest is not None:
            manifest.append(
                {
                    "record": "run.finished",
                    "batch_id": job.batch_id,
                    "finished_at": utc_rfc3339(clock.wall()),
                    **input_fields,
                    "stop_reason": reason,
                    "exit_code": int(code),
                    "ingested": stats.ingested,
                    "already_ingested": stats.already_ingested,
                    "failed": stats.failed,
                    "deferred": stats.deferred,
                    "pending": stats.pending,
                    "results_bytes": files.results.offset,
                    "audit_log": str(job.audit_path),
                    "audit_head": audit.head,
                }
            )
        return RunReport(
            job.batch_id,
            stats,
            code,
            reason,
            message=str(error) if isinstance(error, OutputWriteError) else "",
            paths={
                "results": str(job.output_path) if job.output_path else "-",
                "failures": str(job.failures_path) if files.failures.lines else "",
                "audit": str(job.audit_path),
            },
            audit_head=audit.head,
        )
    finally:
        if job.input_path is not None:
            raw_source.close()
        files.close()
        restore_signals()
