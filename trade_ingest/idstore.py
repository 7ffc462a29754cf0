"""A set of trade IDs whose memory stays flat at any size: RAM first, then SQLite on disk.

De-duplicating the input and remembering the ledger need every distinct ID of
a batch. A Python dict of a million IDs costs over 100 MB; this store keeps
the first ``memory_limit`` IDs in a dict and moves them in bulk to a temporary
SQLite table (one B-tree on disk, a few MB of page cache) whenever the dict
fills, so a backfill of millions of trades runs in the memory of a few
thousand. SQLite is in the standard library; ``connect("")`` gives a private
on-disk database in the temp directory that SQLite itself deletes, even when
the process is killed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

# IDs kept in RAM before they move to disk; about 2.5 MB at typical ID lengths.
DEFAULT_MEMORY_LIMIT = 20_000
_CACHE_KIB = 2048


class IdStore:
    """Maps each trade ID to a number (the input line it was first seen on, say)."""

    def __init__(self, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self._memory: dict[str, int] = {}
        self._limit = memory_limit
        self._disk: sqlite3.Connection | None = None
        self._on_disk = 0

    def _open_disk(self) -> sqlite3.Connection:
        if self._disk is None:
            # One thread at a time uses a store (the reader thread, or the loop's).
            self._disk = sqlite3.connect("", check_same_thread=False)
            self._disk.executescript(
                f"""
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                PRAGMA temp_store = FILE;
                PRAGMA cache_size = -{_CACHE_KIB};
                CREATE TABLE ids (id TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
                """
            )
        return self._disk

    def _spill(self) -> None:
        disk = self._open_disk()
        with disk:
            disk.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", self._memory.items())
        self._on_disk += len(self._memory)
        self._memory.clear()

    def get(self, trade_id: str) -> int | None:
        value = self._memory.get(trade_id)
        if value is None and self._disk is not None:
            row = self._disk.execute("SELECT value FROM ids WHERE id = ?", (trade_id,)).fetchone()
            value = None if row is None else int(row[0])
        return value

    def setdefault(self, trade_id: str, value: int) -> int:
        """The value already stored for ``trade_id``, or ``value`` after storing it."""
        known = self.get(trade_id)
        if known is not None:
            return known
        self._memory[trade_id] = value
        if len(self._memory) >= self._limit:
            self._spill()
        return value

    def add(self, trade_id: str) -> None:
        self.setdefault(trade_id, 0)

    def __contains__(self, trade_id: object) -> bool:
        return isinstance(trade_id, str) and self.get(trade_id) is not None

    def __len__(self) -> int:
        return len(self._memory) + self._on_disk

    def __iter__(self) -> Iterator[str]:
        if self._disk is not None:
            for (trade_id,) in self._disk.execute("SELECT id FROM ids"):
                yield str(trade_id)
        yield from list(self._memory)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def __del__(self) -> None:
        self.close()
