"""Reading trade IDs: trimming, comments, invalid IDs, duplicates, streaming."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trade_ingest.ids import (
    DuplicateId,
    IdRules,
    InvalidId,
    LineSplitter,
    TradeId,
    read_ids,
    why_invalid,
)


def ids_of(data: bytes, rules: IdRules | None = None) -> list[object]:
    return list(read_ids(io.BytesIO(data), rules or IdRules()))


def test_bom_crlf_blank_comments_whitespace() -> None:
    """A BOM, CRLF, blank lines, comments and padding are all tolerated."""
    data = b"\xef\xbb\xbfT1\r\n\n  # a comment\n\t T2 \r\n"
    assert ids_of(data) == [TradeId("T1", 1), TradeId("T2", 4)]


def test_duplicates_are_fetched_once_and_counted() -> None:
    """A repeated ID is reported as a duplicate of its first line."""
    assert ids_of(b"A\nB\nA\n A \n") == [
        TradeId("A", 1),
        TradeId("B", 2),
        DuplicateId("A", 3, 1),
        DuplicateId("A", 4, 1),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("../admin", "contains '/'"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a/b?x=1", "contains '/'"),
        ("x#frag", "contains '#'"),
        ("%2e%2e", "contains '%'"),
        ("a\\b", "contains '\\'"),
        ("a\x00b", "contains a control, invisible or space character U+0000"),
        ("a\u2028b", "contains a control, invisible or space character U+2028"),
        ("a\u200bb", "contains a control, invisible or space character U+200B"),
        ("a b", "contains a control, invisible or space character U+0020"),
        ("x" * 129, "longer than max_id_length (129 > 128 characters)"),
    ],
)
def test_implausible_ids_are_refused(text: str, why: str) -> None:
    """IDs that could change a path, a query or a log line are invalid."""
    assert why_invalid(text, IdRules()) == why


@pytest.mark.parametrize("text", ["EEX-2026-000123", "T1", "ICE:123.4", "Żółw-1", "trade_9~x"])
def test_plausible_ids_pass(text: str) -> None:
    """Ordinary trade IDs, non-ASCII letters included, are valid."""
    assert why_invalid(text, IdRules()) is None


def test_id_pattern_from_config() -> None:
    """A desk can say what its IDs look like."""
    rules = IdRules.from_settings(32, r"EEX-\d+")
    assert why_invalid("EEX-12", rules) is None
    assert why_invalid("ICE-12", rules) == "does not match id_pattern 'EEX-\\\\d+'"


def test_invalid_line_keeps_its_line_number() -> None:
    """An invalid ID is reported with where it stood."""
    assert ids_of(b"A\na/b\n") == [TradeId("A", 1), InvalidId("a/b", 2, "contains '/'")]


def test_huge_line_is_cut_not_loaded() -> None:
    """A 10 MB line is reported as too long from its first bytes only."""
    data = b"A\n" + b"x" * 10_000_000 + b"\nB\n"
    items = ids_of(data)
    assert items[0] == TradeId("A", 1)
    assert isinstance(items[1], InvalidId) and items[1].line == 2
    assert items[1].why == "longer than max_id_length"
    assert len(items[1].raw) < 100
    assert items[2] == TradeId("B", 3)


def test_invalid_utf8() -> None:
    """Undecodable bytes are an invalid ID, shown escaped."""
    assert ids_of(b"\xff\xfeA\n") == [InvalidId("\\xff\\xfeA", 1, "not valid UTF-8")]


def test_last_line_without_newline() -> None:
    """The last ID counts even without a final newline."""
    assert ids_of(b"A\nB") == [TradeId("A", 1), TradeId("B", 2)]


@given(st.lists(st.binary(max_size=30), max_size=20), st.integers(1, 50))
def test_splitting_does_not_depend_on_read_size(lines: list[bytes], read_size: int) -> None:
    """Whatever the chunking of the stream, the same IDs come out."""
    data = b"\n".join(lines)
    whole = list(read_ids(io.BytesIO(data), IdRules(max_length=8)))
    chunked = list(read_ids(io.BytesIO(data), IdRules(max_length=8), read_size=read_size))
    assert chunked == whole


@given(st.binary(max_size=300))
def test_reader_never_raises_and_ids_are_clean(data: bytes) -> None:
    """Arbitrary bytes become only valid, invalid or duplicate IDs; valid ones are safe."""
    for item in read_ids(io.BytesIO(data), IdRules(max_length=16)):
        if isinstance(item, TradeId):
            assert item.value and "/" not in item.value and "\n" not in item.value
            assert why_invalid(item.value, IdRules(max_length=16)) is None


def test_line_splitter_cut_across_chunks() -> None:
    """A long line split over several feeds is reported once, cut."""
    splitter = LineSplitter(4)
    out = (
        list(splitter.feed(b"ab\nxxxx"))
        + list(splitter.feed(b"xxx"))
        + list(splitter.feed(b"x\nc"))
    )
    out += list(splitter.feed(b""))
    assert out == [(b"ab", False), (b"xxxx", True), (b"c", False)]
