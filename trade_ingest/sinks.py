"""Results and failures as JSON Lines, and the resume ledger built on them.

Files are opened unbuffered in append mode, so a record is one ``write`` to
the end of the file: a kill between two records never leaves half of one
behind a later one, and a re-run never overwrites what an earlier run wrote.
A write that fails part-way (disk full) is cut back to the record's start.
The results file is the ledger: a re-run skips every trade ID already in it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from trade_ingest.audit import utc_rfc3339
from trade_ingest.errors import LedgerError, OutputError, OutputWriteError
from trade_ingest.idstore import IdStore


class OutputClosed(Exception):
    """The reader of stdout went away (``| head``); the run ends quietly."""


class JsonlWriter:
    """Appends lines to a file, or to stdout when ``path`` is None.

    A lazy writer creates its file on the first line, so a clean run leaves no
    empty failures file behind. ``offset`` is the file's size as far as this
    writer knows it (it holds the output lock, so no one else appends).
    """

    def __init__(self, path: Path | None, *, what: str, lazy: bool = False) -> None:
        self.path = path
        self.what = what
        self.lines = 0
        self.offset = 0
        # SHA-256 of every line this writer wrote: ``batch.committed`` binds them to the audit log.
        self.digest = hashlib.sha256()
        self.created = False
        self._handle: BinaryIO | None = None
        self._buffered: list[bytes] = []
        if not lazy:
            self._open()

    def _open(self) -> BinaryIO:
        if self._handle is None:
            if self.path is None:
                self._handle = sys.stdout.buffer
            else:
                try:
                    self.created = not self.path.exists()
                    self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
                    self.offset = os.fstat(self._handle.fileno()).st_size
                except OSError as exc:
                    raise OutputError(
                        f"cannot create {self.what} file {self.path}: {exc.strerror}; "
                        "check the path and its permissions"
                    ) from None
        return self._handle

    def buffer(self, line: bytes) -> None:
        """Hold a whole line for the next ``flush``, which writes all held lines at once."""
        self._buffered.append(line)

    @property
    def buffered(self) -> int:
        return len(self._buffered)

    def discard(self) -> None:
        """Drop the held lines (their trades are recorded as pending instead)."""
        self._buffered = []

    def flush(self) -> int:
        """Write the held lines with one append; returns how many. On failure none of
        them stays in the file (see ``write``) and they are dropped from the buffer."""
        if not self._buffered:
            return 0
        lines, self._buffered = self._buffered, []
        data = b"".join(lines)
        self.write(data, count=len(lines))
        return len(lines)

    def write(self, line: bytes, count: int = 1) -> None:
        handle = self._open()
        try:
            view = memoryview(line)
            while view:
                written = handle.write(view)
                if written is None:  # pragma: no cover - only non-blocking files return None
                    continue
                view = view[written:]
            if self.path is None:
                handle.flush()
        except BrokenPipeError:
            raise OutputClosed from None
        except OSError as exc:
            self._cut_back(handle)
            where = "stdout" if self.path is None else str(self.path)
            hint = "; free some disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise OutputWriteError(
                f"writing {self.what} to {where} failed: {exc.strerror}{hint}"
            ) from None
        self.lines += count
        self.offset += len(line)
        self.digest.update(line)

    def _cut_back(self, handle: BinaryIO) -> None:
        """Remove the part of a record that did get written: no half line is left behind."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                handle.truncate(self.offset)

    def sync(self) -> None:
        """Flush to the disk (``fsync``); stdout cannot be, which is why it is at-least-once."""
        if self._handle is None or self.path is None:
            return
        try:
            os.fsync(self._handle.fileno())
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
                return  # a pipe or device: nothing to make durable
            raise OutputWriteError(
                f"flushing {self.what} file {self.path} to disk failed: {exc.strerror}"
            ) from None
        if self.created:
            fsync_directory(self.path.parent)
            self.created = False

    def close(self) -> None:
        if self._handle is not None and self.path is not None:
            self._handle.close()
        self._handle = None


_json_text = json.encoder.encode_basestring_ascii  # a str as JSON text, as json.dumps writes it


def _compact_json(body: str) -> str:
    """One line of JSON text with every number exactly as the gateway wrote it.

    In valid JSON, CR and LF can only be whitespace (inside strings they must
    be escaped), and U+2028/U+2029 can only be inside strings, where an escape
    means the same; so these replacements never change the value.
    """
    text = body.strip()
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text


def result_line(trade_id: str, batch_id: str, fetched_at: float, attempts: int, body: str) -> bytes:
    """``{"trade_id","batch_id","fetched_at","attempts","trade"}``; ``body`` is validated JSON."""
    # What json.dumps(..., separators=(",", ":")) writes, without building an encoder a line.
    return (
        f'{{"trade_id":{_json_text(trade_id)},"batch_id":{_json_text(batch_id)},'
        f'"fetched_at":"{utc_rfc3339(fetched_at, digits=3)}","attempts":{int(attempts)},'
        f'"trade":{_compact_json(body)}}}\n'
    ).encode()


def failure_line(
    trade_id: str,
    batch_id: str,
    failed_at: float,
    *,
    reason: str,
    status: int | None,
    attempts: int,
    error: str,
    line: int | None = None,
) -> bytes:
    record: dict[str, object] = {
        "trade_id": trade_id,
        "batch_id": batch_id,
        "failed_at": utc_rfc3339(failed_at, digits=3),
        "reason": reason,
        "status": status,
        "attempts": attempts,
        "error": error,
    }
    if line is not None:
        record["line"] = line
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


# --- the resume ledger, the lock and the manifest --------------------------------------------

LOCK_SUFFIX = ".lock"
MANIFEST_SUFFIX = ".manifest.jsonl"
_RESULT_PREFIX = b'{"trade_id":"'
# The C string scanner the json module itself uses; typeshed does not list it.
_scan_json_string: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TornTail:
    """Bytes after the last newline of an append-only file: a write a crash cut short."""

    offset: int
    length: int
    sha256: str


@dataclass(slots=True)
class Ledger:
    """Trade IDs already in the results file: a re-run skips them, whatever the input order."""

    path: Path
    trade_ids: IdStore = field(default_factory=IdStore)
    lines: int = 0
    torn: TornTail | None = None

    def __contains__(self, trade_id: str) -> bool:
        return trade_id in self.trade_ids

    def __len__(self) -> int:
        return len(self.trade_ids)


def cut_torn_tail(path: Path) -> TornTail | None:
    """Cut a last line that lacks its newline; every record is written with its newline last.

    The cut bytes' hash goes into the audit log, so what was removed can be shown.
    """
    try:
        handle = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(
            f"cannot open {path} to check its last line: {exc.strerror}; check its permissions"
        ) from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return None
        block = 64 * 1024
        end = size
        tail = b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            tail = handle.read(end - start) + tail
            newline = tail.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep == size:
            return None
        handle.seek(keep)
        cut = handle.read()
        try:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        except OSError as exc:
            raise OutputWriteError(
                f"cannot repair the torn last line of {path}: {exc.strerror}"
            ) from None
        return TornTail(keep, len(cut), hashlib.sha256(cut).hexdigest())


def _result_trade_id(line: bytes) -> str | None:
    """The ``trade_id`` of one result line; our own lines start with it (fast path)."""
    if line.startswith(_RESULT_PREFIX):
        try:
            trade_id, _ = _scan_json_string(line.decode("utf-8"), len(_RESULT_PREFIX))
        except (UnicodeDecodeError, ValueError):
            return None
        return trade_id if line.rstrip().endswith(b"}") else None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    value = record.get("trade_id") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def open_ledger(path: Path) -> Ledger:
    """Read the results file as the ledger, after cutting a torn last line.

    Raises ``LedgerError`` for a line that is not a result: guessing would
    risk fetching a trade twice or never.
    """
    torn = cut_torn_tail(path)
    ledger = Ledger(path, torn=torn)
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return ledger
    except OSError as exc:
        raise OutputError(f"cannot read results file {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            trade_id = _result_trade_id(line)
            if trade_id is None:
                raise LedgerError(
                    f"results file {path} line {number} is not a trade-ingest result, so it "
                    "cannot serve as the resume ledger; move that line or the file aside, or "
                    "write to another --output"
                )
            ledger.trade_ids.add(trade_id)
            ledger.lines += 1
    return ledger


def try_lock(fd: int, name: str) -> bool:
    """An exclusive ``flock`` on ``fd`` if free now; False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot lock {name}: {exc.strerror}") from None
    return True


class OutputLock:
    """An exclusive ``flock`` on ``{output}.lock``, so two runs never write one output.

    The kernel drops the lock when the process dies, SIGKILL included, so a
    crashed run never leaves a stale lock. The file stays (removing it would
    race with a run about to lock it) and says who holds it.
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def try_acquire(self, holder: dict[str, object]) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot create results file {self.output} (its lock file first): "
                f"{exc.strerror}; check the path and its permissions"
            ) from None
        try:
            locked = try_lock(fd, str(self.path))
        except OutputError:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        self._fd = fd
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder, separators=(",", ":")) + "\n").encode())
        return True

    def holder(self) -> str:
        """Who holds the lock, as far as its file says."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {record['pid']}, batch {record['batch_id']}, since {record['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another trade-ingest process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Manifest:
    """``{output}.manifest.jsonl``: one line when a run starts and one when it ends.

    It records each batch's id, settings and the hash of the input it read,
    so a reviewer can see which runs built the results file and from what.
    """

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + MANIFEST_SUFFIX)

    def previous_runs(self) -> list[dict[str, Any]]:
        """Every whole record so far (a torn last line is cut first)."""
        cut_torn_tail(self.path)
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise OutputError(f"cannot read manifest {self.path}: {exc.strerror}") from None
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputWriteError(f"writing manifest {self.path} failed: {exc.strerror}") from None


def fsync_directory(path: Path) -> None:
    """Make a new file's directory entry durable, so the file survives a power cut."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
