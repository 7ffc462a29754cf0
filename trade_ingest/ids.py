"""Reading trade IDs: streaming, normalising, validating and de-duplicating.

An ID is data, never syntax: anything that could change a request path or
split a log line is refused here, before a request is built.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from trade_ingest.errors import InputNotFound
from trade_ingest.idstore import IdStore

_BOM = b"\xef\xbb\xbf"
# Most trade IDs are plain ASCII: check those with one regex, not per character.
_PLAIN_ASCII = re.compile(r"[A-Za-z0-9._:+@=,;~!$&'()*\-\[\]]+")
_FORBIDDEN = {"/": "'/'", "\\": "'\\'", "?": "'?'", "#": "'#'", "%": "'%'"}


@dataclass(frozen=True, slots=True)
class TradeId:
    """A valid ID to fetch, with the input line it came from."""

    value: str
    line: int


@dataclass(frozen=True, slots=True)
class InvalidId:
    """An input line that is not a plausible trade ID; it becomes an ``invalid_id`` failure."""

    raw: str
    line: int
    why: str


@dataclass(frozen=True, slots=True)
class DuplicateId:
    """An ID seen before in this input; fetched once, counted here."""

    value: str
    line: int
    first_line: int


@dataclass(frozen=True, slots=True)
class IdRules:
    max_length: int = 128
    pattern: re.Pattern[str] | None = None

    @classmethod
    def from_settings(cls, max_length: int, pattern: str) -> IdRules:
        return cls(max_length, re.compile(pattern) if pattern else None)


def why_invalid(text: str, rules: IdRules) -> str | None:
    """Why ``text`` (already trimmed) is not a plausible trade ID, or None if it is."""
    if not text:
        return "empty"
    if len(text) > rules.max_length:
        return f"longer than max_id_length ({len(text)} > {rules.max_length} characters)"
    if not _PLAIN_ASCII.fullmatch(text):
        for char in text:
            if char in _FORBIDDEN:
                return f"contains {_FORBIDDEN[char]}"
            if unicodedata.category(char)[0] in "CZ":
                return f"contains a control, invisible or space character U+{ord(char):04X}"
    if ".." in text:
        return "contains '..'"
    if rules.pattern is not None and not rules.pattern.fullmatch(text):
        return f"does not match id_pattern {rules.pattern.pattern!r}"
    return None


class LineSplitter:
    """Splits a byte stream into lines without ever holding a huge one.

    A line longer than ``max_line_bytes`` is kept only as its first bytes and
    reported as cut; the rest of it is dropped as it arrives.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._pending = b""
        self._cut = False

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bool]]:
        """Complete lines in ``pending + data``; ``b""`` means end of input."""
        if not data:
            if self._pending or self._cut:
                yield self._pending, self._cut
            self._pending, self._cut = b"", False
            return
        buffer = self._pending + data if self._pending else data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            if self._cut:
                yield self._pending, True
                self._cut = False
            elif len(line) > self._max:
                yield line[: self._max], True
            else:
                yield line, False
            self._pending = b""
            start = end + 1
        rest = buffer[start:]
        if self._cut:
            return
        if len(rest) > self._max:
            self._pending, self._cut = rest[: self._max], True
        else:
            self._pending = rest


class IdParser:
    """Turns input lines into valid, invalid and duplicate IDs, numbering lines from 1."""

    def __init__(self, rules: IdRules) -> None:
        self.rules = rules
        self.max_line_bytes = rules.max_length * 4 + 64
        self._first_seen = IdStore()
        self._line = 0

    def parse(self, raw: bytes, cut: bool) -> TradeId | InvalidId | DuplicateId | None:
        """The meaning of one line, or None for a blank line or a comment."""
        self._line += 1
        number = self._line
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            if not cut:
                shown = raw.decode("utf-8", "backslashreplace").strip()
                return InvalidId(shown, number, "not valid UTF-8")
            text = raw.decode("utf-8", "ignore").strip()
        if not text or text.startswith("#"):
            return None
        if cut:
            return InvalidId(text[:64] + "...", number, "longer than max_id_length")
        why = why_invalid(text, self.rules)
        if why is not None:
            return InvalidId(text, number, why)
        first = self._first_seen.setdefault(text, number)
        if first != number:
            return DuplicateId(text, number, first)
        return TradeId(text, number)


def read_ids(
    stream: BinaryIO, rules: IdRules, read_size: int = 65536
) -> Iterator[TradeId | InvalidId | DuplicateId]:
    """Every non-blank, non-comment line of ``stream`` as a valid, invalid or duplicate ID."""
    parser = IdParser(rules)
    splitter = LineSplitter(parser.max_line_bytes)
    while True:
        data = stream.read(read_size)
        for raw, cut in splitter.feed(data):
            item = parser.parse(raw, cut)
            if item is not None:
                yield item
        if not data:
            return


class HashingReader:
    """Passes reads through, keeping a SHA-256 of every byte, for the manifest."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._read = getattr(source, "read1", source.read)
        self._hash = hashlib.sha256()
        self.bytes_read = 0
        self.at_end = False

    def _seen(self, data: bytes) -> bytes:
        self._hash.update(data)
        self.bytes_read += len(data)
        if not data:
            self.at_end = True
        return data

    def read(self, size: int = -1) -> bytes:
        return self._seen(self._read(size))

    def readline(self) -> bytes:
        return self._seen(self._source.readline())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# Failure reasons not worth a retry: the request itself was refused as wrong,
# so asking again gets the same answer. Every other reason (deferred, pending,
# retries_exhausted, retry_budget_exhausted, invalid_body, 401/403 once the
# credentials are fixed, ...) is retried by ``--retry-failed``.
NOT_WORTH_RETRYING = frozenset(
    {"invalid_id", "body_too_large", "http_400", "http_404", "http_405", "http_410", "http_414"}
)


def worth_retrying(reason: str) -> bool:
    """Whether ``--retry-failed`` takes a failure with this ``reason``."""
    return reason not in NOT_WORTH_RETRYING and not reason.startswith("http_3")


class RetryableFailures:
    """A failures file read as an input of trade IDs: the ones worth retrying.

    Each record becomes one line, a blank one for a trade not worth retrying,
    so line numbers in the new run's records are the failures file's own.
    """

    def __init__(self, source: HashingReader, name: str) -> None:
        self._lines = iter(source.readline, b"")
        self._name = name
        self._number = 0
        self.skipped = 0

    def _id_line(self, line: bytes) -> bytes:
        self._number += 1
        if not line.strip():
            return b"\n"
        try:
            record = json.loads(line)
            trade_id, reason = record["trade_id"], record["reason"]
            if not isinstance(trade_id, str) or not isinstance(reason, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if not line.endswith(b"\n"):  # a torn last line: its trade was never recorded
                return b"\n"
            raise InputNotFound(
                f"{self._name} line {self._number} is not a trade-ingest failure record; "
                "--retry-failed takes a failures file written by `trade-ingest run`"
            ) from None
        if not worth_retrying(reason) or "\n" in trade_id or "\r" in trade_id:
            self.skipped += 1
            return b"\n"
        return trade_id.encode() + b"\n"

    def read(self, size: int = -1) -> bytes:
        out: list[bytes] = []
        total = 0
        for line in self._lines:
            piece = self._id_line(line)
            out.append(piece)
            total += len(piece)
            if 0 < size <= total:
                break
        return b"".join(out)
