"""The audit log: one JSON line per thing that happened, hash-chained, written with structlog.

Every event carries ``timestamp`` (UTC, RFC 3339, ``Z``), ``event`` and
``batch_id``; trade events add ``trade_id`` and ``attempt``. Secrets are
removed by ``Redactor`` before anything is rendered.

The chain: each event also carries ``seq`` (0, 1, 2, ... across every run
appended to the file, no gaps), ``prev_hash`` (the previous event's ``hash``;
64 zeros for the first) and ``hash``::

    canonical = json.dumps(event_without_hash, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    hash = sha256(canonical)                 # or HMAC-SHA256(key, canonical)

The line on disk is ``canonical`` with ``,"hash":"..."`` added before the
closing brace, so editing, removing or reordering any event breaks the chain
at that line. With a key (the variable named by ``audit_key_env``) nobody
without it can rebuild a valid chain; without one, the head hash printed at
the end of each run is the outside copy to check against.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from trade_ingest.clock import Clock
from trade_ingest.errors import OutputError, OutputWriteError

_SECRET_KEYS = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|password|passwd|secret|token"
    r"|access_token|refresh_token|client_secret|.*api[_-]?key"
    r"|.*[_-](token|secret|password|passwd|credentials?|signature))$"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{4,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
# The query of a URL in text: its values may be API keys (``?api_key=...``).
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#\"'<>]*\?)([^\s#\"'<>]+)")
_QUERY_VALUE = re.compile(r"=[^&;]*")
# Text with neither whitespace nor a URL scheme: nothing above can match in it (what a
# credential pattern needs), so most values skip the substitutions.
_MAY_HOLD_CREDENTIAL = re.compile(r"\s|://")
REDACTED = "***"
# Values that hold no text: nothing in them to redact, no keys to check.
_PLAIN = frozenset({int, float, bool, type(None)})
# Values with no keys inside to check.
_FLAT = _PLAIN | {str}


def _redact_credential(match: re.Match[str]) -> str:
    return match.group(1) + match.group(2) + REDACTED


def _redact_query(match: re.Match[str]) -> str:
    return match.group(1) + _QUERY_VALUE.sub("=" + REDACTED, match.group(2))


def _redact_userinfo(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED + "@"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def utc_rfc3339(epoch: float, digits: int = 6) -> str:
    """``2026-11-28T20:32:55.123456Z``: UTC, fixed width, sortable as text."""
    micros = round(epoch * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    return f"{_utc_second(second)}.{fraction:06d}"[: 20 + digits] + "Z"


class Redactor:
    """A structlog processor that removes secrets by key name, pattern and known value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = [s for s in secrets if s]
        # The same few keys come by every event: decide each once.
        self._secret_key: dict[str, bool] = {}

    def _is_secret_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        known = self._secret_key.get(key)
        if known is None:
            known = bool(_SECRET_KEYS.match(key))
            if len(self._secret_key) < 10_000:
                self._secret_key[key] = known
        return known

    def _scrub_text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if _MAY_HOLD_CREDENTIAL.search(value) is None:
            return value
        value = _BEARER.sub(_redact_credential, value)
        if "://" in value:
            value = _URL_QUERY.sub(_redact_query, value)
            value = _URL_USERINFO.sub(_redact_userinfo, value)
        return value

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrub_text(value)
        if isinstance(value, dict):
            return self._scrub_dict(value)
        if isinstance(value, list | tuple):
            # A header as a (name, value) pair: the name says whether the value is secret.
            if len(value) == 2 and self._is_secret_key(value[0]):
                return [value[0], REDACTED]
            return [self.scrub(v) for v in value]
        return value

    def _scrub_dict(self, value: Mapping[Any, Any]) -> dict[Any, Any]:
        """``scrub`` of a dict: what an event is, so the common cases come first."""
        known = self._secret_key  # holds text keys only: any other key misses, then is no secret
        may_hold_credential = None if self._secrets else _MAY_HOLD_CREDENTIAL.search
        scrubbed = {}
        for key, item in value.items():
            secret = known.get(key)
            if secret is None:
                secret = self._is_secret_key(key)
            kind = type(item)
            if secret:
                scrubbed[key] = REDACTED
            elif kind is str:
                if may_hold_credential is not None and may_hold_credential(item) is None:
                    scrubbed[key] = item
                else:
                    scrubbed[key] = self._scrub_text(item)
            elif kind in _PLAIN:
                scrubbed[key] = item
            else:
                scrubbed[key] = self.scrub(item)
        return scrubbed

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return self._scrub_dict(event_dict)


class CoreFields:
    """A structlog processor adding the timestamp and batch id every event carries.

    They are set on structlog's own copy of the event, over any the caller passed: the
    line is rendered with sorted keys, so where they go in the dict does not matter.
    """

    def __init__(self, batch_id: str, clock: Clock) -> None:
        self._batch_id = batch_id
        self._clock = clock

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict["timestamp"] = utc_rfc3339(self._clock.wall())
        event_dict["batch_id"] = self._batch_id
        return event_dict


GENESIS = "0" * 64


def canonical_json(event: dict[str, Any]) -> str:
    """The text an event's hash is taken over: sorted keys, no spaces, ASCII only.

    ``ensure_ascii`` also keeps U+2028 and friends escaped, so no event can split a line.
    """
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def event_hash(canonical: str, key: bytes | None) -> str:
    data = canonical.encode("ascii")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: the next ``seq`` and the last event's ``hash``."""

    next_seq: int = 0
    head: str = GENESIS


def read_chain_head(path: Path) -> ChainHead:
    """The head of the chain already in ``path`` (whose torn tail, if any, was cut)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            block = min(size, 1 << 20)
            handle.seek(size - block)
            lines = handle.read(block).splitlines()
    except FileNotFoundError:
        return ChainHead()
    except OSError as exc:
        raise OutputWriteError(f"cannot read the audit log {path}: {exc.strerror}") from None
    if not lines or not lines[-1].strip():
        return ChainHead()
    try:
        last = json.loads(lines[-1])
        return ChainHead(int(last["seq"]) + 1, str(last["hash"]))
    except (ValueError, KeyError, TypeError):
        raise OutputError(
            f"the last line of audit log {path} is not a chained trade-ingest event; "
            "append to a new --audit-log"
        ) from None


def _only_text_keys(value: Any) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                return False
            if type(item) not in _FLAT and not _only_text_keys(item):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(type(v) in _FLAT or _only_text_keys(v) for v in value)
    return True


# One encoder for every event: ``json.dumps`` with options builds a new one each call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


class HashChain:
    """The last structlog processor: numbers, links and hashes each event, and renders it."""

    def __init__(self, start: ChainHead, key: bytes | None) -> None:
        self.next_seq = start.next_seq
        self.head = start.head
        self._key = key

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        event_dict["seq"] = self.next_seq
        event_dict["prev_hash"] = self.head
        try:
            if _only_text_keys(event_dict):
                body = _CANONICAL.encode(event_dict)
            else:
                raise TypeError
        except TypeError:
            # Non-text keys sort differently once they are JSON strings: go through JSON
            # once, so the line is exactly the canonical form a verifier rebuilds.
            body = canonical_json(json.loads(json.dumps(event_dict, default=str)))
        digest = event_hash(body, self._key)
        self.next_seq += 1
        self.head = digest
        return body[:-1] + ',"hash":"' + digest + '"}'


class _HeldLines:
    """structlog's logger for us: rendered events wait here until ``flush`` writes them
    with one call, so a trade costs no write of its own (the pipeline flushes every
    few milliseconds, and always before the results they describe)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lines: list[str] = []

    def msg(self, message: str) -> None:
        self.lines.append(message)

    info = msg

    def flush(self) -> None:
        if self.lines:
            text = "\n".join(self.lines) + "\n"
            self.lines.clear()
            self._stream.write(text)
        self._stream.flush()


class AuditLog:
    """Writes audit events as hash-chained JSON lines to ``stream``; ``flush`` writes them."""

    def __init__(
        self,
        stream: TextIO,
        batch_id: str,
        clock: Clock,
        secrets: Iterable[str] = (),
        *,
        start: ChainHead | None = None,
        key: bytes | None = None,
        hold: bool = False,
    ) -> None:
        """``hold``: keep rendered events until ``flush`` (the pipeline flushes them in
        batches); otherwise each event is written as it is emitted."""
        self.batch_id = batch_id
        self.hash_alg = "sha256" if key is None else "hmac-sha256"
        self._stream = stream
        self.chain = HashChain(start or ChainHead(), key)
        self.redactor = Redactor(secrets)
        self.first_seq = self.chain.next_seq
        self._held = _HeldLines(stream)
        self._hold = hold
        self._logger = structlog.wrap_logger(
            self._held,
            processors=[CoreFields(batch_id, clock), self.redactor, self.chain],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
        ).bind()  # the bound logger itself, not a proxy that looks it up on every event

    @property
    def head(self) -> str:
        """The last event's hash: printed at the end of a run as the outside copy."""
        return self.chain.head

    @property
    def events_written(self) -> int:
        return self.chain.next_seq - self.first_seq

    def emit(self, event: str, **fields: Any) -> None:
        self._logger.info(event, **fields)
        if not self._hold:
            self.flush()

    @property
    def held(self) -> int:
        """Events rendered but not yet written."""
        return len(self._held.lines)

    def flush(self) -> None:
        """Write every held event (one write), before anything that depends on them."""
        try:
            self._held.flush()
        except OSError as exc:
            raise OutputWriteError(_write_failed(exc)) from None

    def sync(self) -> None:
        """Write and fsync the log, so the run's last word survives a power cut."""
        self.flush()
        try:
            os.fsync(self._stream.fileno())
        except OSError as exc:
            raise OutputWriteError(_write_failed(exc)) from None

    def close(self) -> None:
        with contextlib.suppress(OutputWriteError):
            self.flush()
        self._stream.close()


def _write_failed(exc: OSError) -> str:
    hint = "; free some disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"writing the audit log failed: {exc.strerror}{hint}"
