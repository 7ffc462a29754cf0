"""Results and failures as JSON Lines: each record written whole, with one append.

Files are opened unbuffered in append mode, so a record is one ``write`` to
the end of the file: a kill between two records never leaves half of one
behind a later one, and a re-run never overwrites what an earlier run wrote.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import BinaryIO

from trade_ingest.audit import utc_rfc3339
from trade_ingest.errors import OutputError, OutputWriteError


class OutputClosed(Exception):
    """The reader of stdout went away (``| head``); the run ends quietly."""


class JsonlWriter:
    """Appends lines to a file, or to stdout when ``path`` is None.

    A lazy writer creates its file on the first line, so a clean run leaves no
    empty failures file behind.
    """

    def __init__(self, path: Path | None, *, what: str, lazy: bool = False) -> None:
        self.path = path
        self.what = what
        self.lines = 0
        self._handle: BinaryIO | None = None
        if not lazy:
            self._open()

    def _open(self) -> BinaryIO:
        if self._handle is None:
            if self.path is None:
                self._handle = sys.stdout.buffer
            else:
                try:
                    self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
                except OSError as exc:
                    raise OutputError(
                        f"cannot create {self.what} file {self.path}: {exc.strerror}; "
                        "check the path and its permissions"
                    ) from None
        return self._handle

    def write(self, line: bytes) -> None:
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
            where = "stdout" if self.path is None else str(self.path)
            hint = "; free some disk space" if exc.errno == errno.ENOSPC else ""
            raise OutputWriteError(
                f"writing {self.what} to {where} failed: {exc.strerror}{hint}"
            ) from None
        self.lines += 1

    def close(self) -> None:
        if self._handle is not None and self.path is not None:
            self._handle.close()
        self._handle = None


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
    head = json.dumps(
        {
            "trade_id": trade_id,
            "batch_id": batch_id,
            "fetched_at": utc_rfc3339(fetched_at, digits=3),
            "attempts": attempts,
        },
        separators=(",", ":"),
    )
    return (head[:-1] + ',"trade":' + _compact_json(body) + "}\n").encode()


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
