"""Checking a gateway's body before it is trusted as a trade.

The body is kept as text, not re-encoded: prices and quantities reach the
results file digit for digit as the gateway sent them (parsed here only as
``Decimal`` for the checks, never as float).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

_UTF8_BOM = b"\xef\xbb\xbf"


class InvalidBody(ValueError):
    """The body is not a trade record we can write."""


def _no_constants(name: str) -> NoReturn:
    raise InvalidBody(f"body contains {name}, which is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidBody(f"body has duplicate key {key[:80]!r}")
            seen.add(key)
    return record


def check_trade_body(raw: bytes, trade_id: str) -> str:
    """The body as JSON text if it is one JSON object for ``trade_id``; else ``InvalidBody``."""
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("body is not UTF-8") from None
    try:
        record = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicate_keys,
        )
    except InvalidBody:
        raise
    except RecursionError:
        raise InvalidBody("body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidBody(f"body is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidBody(f"body is a JSON {type(record).__name__}, not an object")
    sent_id = record.get("trade_id", trade_id)
    if sent_id != trade_id:
        raise InvalidBody(f"body is for trade {str(sent_id)[:80]!r}, not the one requested")
    return text
