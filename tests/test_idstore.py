"""The ID store: the same answers as a dict, whether its IDs are in RAM or spilled to disk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trade_ingest.ids import DuplicateId, IdParser, IdRules, TradeId
from trade_ingest.idstore import IdStore


@given(st.lists(st.text(min_size=1, max_size=8), max_size=200), st.integers(1, 20))
def test_behaves_like_a_dict_at_any_spill_size(ids: list[str], limit: int) -> None:
    """setdefault, get, membership, length and iteration match a plain dict."""
    store, reference = IdStore(memory_limit=limit), {}
    for line, trade_id in enumerate(ids, start=1):
        assert store.setdefault(trade_id, line) == reference.setdefault(trade_id, line)
    assert len(store) == len(reference)
    assert sorted(store) == sorted(reference)
    for trade_id, line in reference.items():
        assert trade_id in store and store.get(trade_id) == line
    assert "never-stored" not in store
    store.close()


def test_parser_finds_duplicates_across_the_spill() -> None:
    """A duplicate of an ID that already moved to disk is still a duplicate, with its line."""
    parser = IdParser(IdRules())
    parser._first_seen = IdStore(memory_limit=10)
    items = [parser.parse(f"T{n}".encode(), False) for n in range(100)]
    assert all(isinstance(item, TradeId) for item in items)
    again = parser.parse(b"T3", False)
    assert again == DuplicateId("T3", 101, 4)
