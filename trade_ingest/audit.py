"""The audit log: one JSON line per thing that happened, written with structlog.

Every event carries ``timestamp`` (UTC, RFC 3339, ``Z``), ``event`` and
``batch_id``; trade events add ``trade_id`` and ``attempt``. Secrets are
removed by ``Redactor`` before anything is rendered.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from trade_ingest.clock import Clock
from trade_ingest.errors import OutputWriteError

_SECRET_KEYS = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|password|passwd|secret|token"
    r"|access_token|refresh_token|api[_-]?key|client_secret|.*_(token|secret|password))$"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{4,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
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
            return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and _SECRET_KEYS.match(k) else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
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


def _render(obj: Any, **kwargs: Any) -> str:
    # ensure_ascii keeps U+2028 and friends escaped, so no event can split a line.
    return json.dumps(obj, separators=(",", ":"), default=str)


class AuditLog:
    """Writes audit events as JSON lines to ``stream``."""

    def __init__(
        self, stream: TextIO, batch_id: str, clock: Clock, secrets: Iterable[str] = ()
    ) -> None:
        self.batch_id = batch_id
        self._stream = stream
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[
                CoreFields(batch_id, clock),
                Redactor(secrets),
                structlog.processors.JSONRenderer(serializer=_render),
            ],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
        )

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
