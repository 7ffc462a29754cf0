"""The results file as a ledger: torn-line repair, reading it back, writes that fail half-way."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trade_ingest.errors import ExitCode, LedgerError, OutputWriteError
from trade_ingest.ids import HashingReader, RetryableFailures, worth_retrying
from trade_ingest.sinks import (
    JsonlWriter,
    Manifest,
    OutputLock,
    cut_torn_tail,
    failure_line,
    open_ledger,
    result_line,
)


def line_for(trade_id: str, batch: str = "B1") -> bytes:
    body = json.dumps({"trade_id": trade_id, "price": "42.10"})
    return result_line(trade_id, batch, 1_764_000_000.0, 1, body)


@pytest.mark.parametrize(
    ("content", "kept", "cut"),
    [
        (b"", b"", None),
        (b'{"a":1}\n', b'{"a":1}\n', None),
        (b'{"a":1}\n{"b"', b'{"a":1}\n', b'{"b"'),
        (b'{"half', b"", b'{"half'),
        (b"x\n" * 40_000 + b"y" * 70_000, b"x\n" * 40_000, b"y" * 70_000),
    ],
)
def test_cut_torn_tail(tmp_path: Path, content: bytes, kept: bytes, cut: bytes | None) -> None:
    """Bytes after the last newline are cut, and their length and hash reported."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    torn = cut_torn_tail(path)
    assert path.read_bytes() == kept
    if cut is None:
        assert torn is None
    else:
        assert torn is not None
        assert (torn.offset, torn.length) == (len(kept), len(cut))
        assert torn.sha256 == hashlib.sha256(cut).hexdigest()


def test_cut_torn_tail_of_a_missing_file(tmp_path: Path) -> None:
    """A file that does not exist yet has nothing to repair."""
    assert cut_torn_tail(tmp_path / "nope.jsonl") is None


def test_open_ledger_reads_ids_and_repairs(tmp_path: Path) -> None:
    """IDs come back exactly, escapes included; the torn last record is cut, not counted."""
    path = tmp_path / "results.jsonl"
    odd = ["EEX-1", 'q"uote', "ünï", "a:b+c", "tab\\x"]
    path.write_bytes(b"".join(line_for(t) for t in odd) + line_for("TORN")[:25])
    ledger = open_ledger(path)
    assert set(ledger.trade_ids) == set(odd)
    assert ledger.lines == len(odd)
    assert ledger.torn is not None and ledger.torn.length == 25
    assert "TORN" not in ledger
    assert path.read_bytes().endswith(b"}\n")


def test_open_ledger_accepts_records_in_another_key_order(tmp_path: Path) -> None:
    """A result re-serialised by another tool (keys re-ordered) still counts."""
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"batch_id": "B0", "trade_id": "T9", "trade": {}}) + "\n")
    assert set(open_ledger(path).trade_ids) == {"T9"}


def test_open_ledger_refuses_a_foreign_line(tmp_path: Path) -> None:
    """A line that is not a result stops the run (exit 73) rather than risk a duplicate."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(line_for("T1") + b"hello world\n" + line_for("T2"))
    with pytest.raises(LedgerError, match="line 2 is not a trade-ingest result") as caught:
        open_ledger(path)
    assert caught.value.exit_code == ExitCode.CANT_CREATE


class _FailingHandle:
    """Writes ``room`` bytes of what it is given, then fails as a full disk does."""

    def __init__(self, real: Any, room: int, errno_: int = errno.ENOSPC) -> None:
        self._real = real
        self._room = room
        self._errno = errno_

    def write(self, data: memoryview) -> int:
        if self._room <= 0:
            raise OSError(self._errno, "No space left on device")
        part = bytes(data[: self._room])
        self._room -= len(part)
        return int(self._real.write(part))

    def truncate(self, size: int) -> int:
        return int(self._real.truncate(size))

    def fileno(self) -> int:
        return int(self._real.fileno())

    def close(self) -> None:
        self._real.close()


def test_a_write_that_fails_half_way_is_cut_back(tmp_path: Path) -> None:
    """Disk full in the middle of a record: exit 74's error, and no half record left."""
    path = tmp_path / "results.jsonl"
    writer = JsonlWriter(path, what="results")
    writer.write(line_for("T1"))
    writer._handle = _FailingHandle(writer._handle, room=30)  # type: ignore[assignment]
    with pytest.raises(OutputWriteError, match="free some disk space") as caught:
        writer.write(line_for("T2"))
    writer.close()
    assert caught.value.exit_code == ExitCode.IO_ERROR
    assert path.read_bytes() == line_for("T1")
    assert writer.lines == 1


def test_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    """A second lock on the same output fails while the first is held, and works after."""
    output = tmp_path / "results.jsonl"
    first, second = OutputLock(output), OutputLock(output)
    holder = {"pid": 123, "batch_id": "B1", "since": "2026-11-28T20:00:00+00:00"}
    assert first.try_acquire(holder)
    assert not second.try_acquire({"pid": 456, "batch_id": "B2", "since": "now"})
    assert second.holder() == "pid 123, batch B1, since 2026-11-28T20:00:00+00:00"
    first.release()
    assert second.try_acquire({"pid": 456, "batch_id": "B2", "since": "now"})
    second.release()


def test_manifest_keeps_whole_records(tmp_path: Path) -> None:
    """Records are appended; a torn last one (a crash mid-append) is dropped on reading."""
    manifest = Manifest(tmp_path / "results.jsonl")
    manifest.append({"record": "run.started", "batch_id": "B1"})
    with manifest.path.open("ab") as handle:
        handle.write(b'{"record":"run.fin')
    assert manifest.previous_runs() == [{"record": "run.started", "batch_id": "B1"}]


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        ("deferred", True),
        ("pending", True),
        ("retries_exhausted", True),
        ("retry_budget_exhausted", True),
        ("invalid_body", True),
        ("http_401", True),
        ("http_404", False),
        ("http_410", False),
        ("http_301", False),
        ("invalid_id", False),
        ("body_too_large", False),
    ],
)
def test_worth_retrying(reason: str, retried: bool) -> None:
    """Permanent refusals are left alone; everything a later run may fix is retried."""
    assert worth_retrying(reason) is retried


def test_retryable_failures_keeps_line_numbers(tmp_path: Path) -> None:
    """One line out per record in; blanks for those not retried, so numbering holds."""
    path = tmp_path / "failed.jsonl"
    records = [
        failure_line("T1", "B", 0, reason="deferred", status=None, attempts=1, error=""),
        failure_line("T2", "B", 0, reason="http_404", status=404, attempts=1, error=""),
        failure_line("T3", "B", 0, reason="pending", status=None, attempts=0, error=""),
    ]
    path.write_bytes(b"".join(records) + b'{"trade_id":"T4","rea')
    with path.open("rb") as handle:
        source = RetryableFailures(HashingReader(handle), str(path))
        assert source.read(1 << 16) == b"T1\n\nT3\n\n"
        assert source.read(1 << 16) == b""
    assert source.skipped == 1


def test_retryable_failures_refuses_another_kind_of_file(tmp_path: Path) -> None:
    """An ID list passed as --retry-failed is a one-line error, not a silent empty run."""
    path = tmp_path / "ids.txt"
    path.write_text("T1\nT2\n")
    with path.open("rb") as handle:
        source = RetryableFailures(HashingReader(handle), str(path))
        with pytest.raises(Exception, match="line 1 is not a trade-ingest failure record"):
            source.read(1 << 16)


class LedgerMachine(RuleBasedStateMachine):
    """Fetch, crash at any byte of a write, resume: the ledger is exactly what completed.

    Each step models one run's writer: records appended whole, or a record cut
    at a random byte by a crash. Resuming reads the ledger (cutting the torn
    tail) and only fetches what it does not hold, as ``run`` does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.completed: set[str] = set()
        self.writer: JsonlWriter | None = None

    @initialize(target=None)
    def start(self) -> None:
        import tempfile

        self.directory = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.path = self.directory / "results.jsonl"
        self.resume()

    @rule(trade_id=st.sampled_from([f"T{n}" for n in range(12)] + ['q"x', "ü-1"]))
    def fetch(self, trade_id: str) -> None:
        assert self.writer is not None
        if trade_id in self.ledger or trade_id in self.completed:
            return  # skipped: in the ledger, or already fetched by this run
        self.writer.write(line_for(trade_id))
        self.completed.add(trade_id)

    @rule(trade_id=st.sampled_from(["C1", "C2", "T3"]), fraction=st.floats(0.0, 0.999))
    def crash_mid_write(self, trade_id: str, fraction: float) -> None:
        assert self.writer is not None
        if trade_id in self.completed:
            return
        line = line_for(trade_id)
        cut = int(len(line) * fraction)
        self.writer.close()
        with self.path.open("ab") as handle:
            handle.write(line[:cut])
        self.resume()

    @rule()
    def resume(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.ledger = open_ledger(self.path)
        assert set(self.ledger.trade_ids) == self.completed
        self.writer = JsonlWriter(self.path, what="results")

    @invariant()
    def ledger_is_what_completed(self) -> None:
        if self.writer is None:
            return
        lines = self.path.read_bytes().splitlines()
        ids = [json.loads(line)["trade_id"] for line in lines]
        assert len(ids) == len(set(ids))
        assert set(ids) == self.completed

    def teardown(self) -> None:
        if self.writer is not None:
            self.writer.close()


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
