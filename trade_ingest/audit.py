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

import errno
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, MutableMapping
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
REDACTED = "***"


def utc_rfc3339(epoch: float, digits: int = 6) -> str:
    """``2026-11-28T20:32:55.123456Z``: UTC, fixed width, sortable as text."""
    moment = datetime.fromtimestamp(epoch, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - (6 - digits)] + "Z" if digits < 6 else text + "Z"


class Redactor:
    """A structlog processor that removes secrets by key name, pattern and known value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = [s for s in secrets if s]

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            value = _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, value)
            value = _URL_QUERY.sub(
                lambda m: m.group(1) + _QUERY_VALUE.sub("=" + REDACTED, m.group(2)), value
            )
            return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and _SECRET_KEYS.match(k) else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            # A header as a (name, value) pair: the name says whether the value is secret.
            if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEYS.match(value[0]):
                return [value[0], REDACTED]
            return [self.scrub(v) for v in value]
        return value

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        scrubbed: MutableMapping[str, Any] = self.scrub(dict(event_dict))
        return scrubbed


class CoreFields:
    """A structlog processor putting timestamp, event and batch id first, in that order."""

    def __init__(self, batch_id: str, clock: Clock) -> None:
        self._batch_id = batch_id
        self._clock = clock

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        ordered: dict[str, Any] = {
            "timestamp": utc_rfc3339(self._clock.wall()),
            "event": event_dict.pop("event"),
            "batch_id": self._batch_id,
        }
        ordered.update(event_dict)
        return ordered


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
        return all(isinstance(k, str) and _only_text_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_only_text_keys(v) for v in value)
    return True


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
                body = json.dumps(
                    event_dict,
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=True,
                    default=str,
                )
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


class AuditLog:
    """Writes audit events as hash-chained JSON lines to ``stream``."""

    def __init__(
        self,
        stream: TextIO,
        batch_id: str,
        clock: Clock,
        secrets: Iterable[str] = (),
        *,
        start: ChainHead | None = None,
        key: bytes | None = None,
    ) -> None:
        self.batch_id = batch_id
        self.hash_alg = "sha256" if key is None else "hmac-sha256"
        self._stream = stream
        self.chain = HashChain(start or ChainHead(), key)
        self.redactor = Redactor(secrets)
        self.first_seq = self.chain.next_seq
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[CoreFields(batch_id, clock), self.redactor, self.chain],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
        )

    @property
    def head(self) -> str:
        """The last event's hash: printed at the end of a run as the outside copy."""
        return self.chain.head

    @property
    def events_written(self) -> int:
        return self.chain.next_seq - self.first_seq

    def emit(self, event: str, **fields: Any) -> None:
        try:
            self._logger.info(event, **fields)
        except OSError as exc:
            raise OutputWriteError(_write_failed(exc)) from None

    def sync(self) -> None:
        """Flush the log to the disk, so the run's last word survives a power cut."""
        try:
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as exc:
            raise OutputWriteError(_write_failed(exc)) from None

    def close(self) -> None:
        self._stream.close()


def _write_failed(exc: OSError) -> str:
    hint = "; free some disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"writing the audit log failed: {exc.strerror}{hint}"
