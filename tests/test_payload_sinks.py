"""Body checks and the exact shape of result and failure lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trade_ingest.payload import InvalidBody, check_trade_body
from trade_ingest.sinks import JsonlWriter, failure_line, result_line

NOW = 1_764_000_000.25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"price": NaN}', "NaN"),
        (b'{"price": Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"trade_id": "OTHER"}', "for trade 'OTHER', not the one requested"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_bodies_that_are_not_a_trade(body: bytes, message: str) -> None:
    """Every malformed body is refused with a reason."""
    with pytest.raises(InvalidBody, match=message):
        check_trade_body(body, "T1")


def test_numbers_keep_their_exact_text() -> None:
    """Prices and quantities reach the result digit for digit."""
    body = check_trade_body(b'{"trade_id":"T1",\n "price": 84.350,\r\n "qty": 1e400}', "T1")
    line = result_line("T1", "B1", NOW, 2, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b'"price": 84.350' in line and b"1e400" in line
    record = json.loads(line)
    assert record["trade_id"] == "T1"
    assert record["batch_id"] == "B1"
    assert record["attempts"] == 2
    assert record["fetched_at"] == "2025-11-24T16:00:00.250Z"
    assert list(record) == ["trade_id", "batch_id", "fetched_at", "attempts", "trade"]


def test_line_separators_inside_strings_stay_one_line() -> None:
    """U+2028 in a payload string is escaped so no reader splits the record."""
    body = check_trade_body('{"note": "a\u2028b"}'.encode(), "T1")
    line = result_line("T1", "B1", NOW, 1, body).decode()
    assert "\u2028" not in line
    assert json.loads(line)["trade"]["note"] == "a\u2028b"


def test_failure_line_fields() -> None:
    """A failure line has the fields a user feeds back with jq."""
    line = failure_line(
        "T\n1", "B1", NOW, reason="http_404", status=404, attempts=1, error="HTTP 404", line=3
    )
    record = json.loads(line)
    assert line.count(b"\n") == 1
    assert record == {
        "trade_id": "T\n1",
        "batch_id": "B1",
        "failed_at": "2025-11-24T16:00:00.250Z",
        "reason": "http_404",
        "status": 404,
        "attempts": 1,
        "error": "HTTP 404",
        "line": 3,
    }


def test_lazy_writer_creates_no_empty_file(tmp_path: Path) -> None:
    """A failures file appears only when there is a failure."""
    path = tmp_path / "failed.jsonl"
    writer = JsonlWriter(path, what="failures", lazy=True)
    writer.close()
    assert not path.exists()
    writer = JsonlWriter(path, what="failures", lazy=True)
    writer.write(b"{}\n")
    writer.close()
    assert path.read_bytes() == b"{}\n"


def test_writer_appends(tmp_path: Path) -> None:
    """A second run appends; it never overwrites an earlier run's results."""
    path = tmp_path / "out.jsonl"
    for text in (b"1\n", b"2\n"):
        writer = JsonlWriter(path, what="results")
        writer.write(text)
        writer.close()
    assert path.read_bytes() == b"1\n2\n"
