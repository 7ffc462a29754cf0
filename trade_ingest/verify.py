"""``trade-ingest audit verify``: recompute an audit log's hash chain, and check results against it.

Streaming and pure: it takes lines (bytes, newline included) and returns a
report; the command line opens the files. What it proves:

- every event's ``hash`` is the SHA-256 (or HMAC-SHA256, with the key) of its
  canonical JSON: an edited byte breaks it at that line;
- ``seq`` runs 0, 1, 2, ... with no gap and ``prev_hash`` is the previous
  event's hash: a deleted, inserted or reordered event breaks it at that line;
- every line ends with a newline (a torn last line is reported) and the log ends
  with a seal (``batch.finished``), whose ``events`` count matches its run;
- with ``results``: every result line has its ``trade.fetched`` event, every
  fetched trade has its result line (or a ``trade.pending`` event, or its run
  was killed), no trade is written twice, and the lines of each batch hash to
  the ``results_sha256`` its last ``batch.committed`` event recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trade_ingest.audit import GENESIS, canonical_json, event_hash

_HASH_TAIL = len(',"hash":"') + 64 + len('"}')
# Past this many findings the rest are counted, not listed.
MAX_FINDINGS = 20


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem, at a line of a file (1-based)."""

    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.problem}"


@dataclass
class _Run:
    batch_id: str
    started_line: int
    first_seq: int
    events: int = 0
    sealed: bool = False
    stop_reason: str = ""


@dataclass
class Verification:
    """What ``verify_audit`` found; ``ok`` when the log (and results) are intact."""

    events: int = 0
    runs: int = 0
    head: str | None = None
    head_seq: int | None = None
    hash_alg: str = "sha256"
    errors: list[Finding] = field(default_factory=list)
    more_errors: int = 0
    notes: list[str] = field(default_factory=list)
    results_lines: int | None = None
    # Facts for the results check, per batch.
    fetched: dict[str, set[str]] = field(default_factory=dict)
    pending: dict[str, set[str]] = field(default_factory=dict)
    committed: dict[str, tuple[int, str]] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, finding: Finding) -> None:
        if len(self.errors) < MAX_FINDINGS:
            self.errors.append(finding)
        else:
            self.more_errors += 1

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "runs": self.runs,
            "head": self.head,
            "head_seq": self.head_seq,
            "hash_alg": self.hash_alg,
            "errors": [str(e) for e in self.errors],
            "more_errors": self.more_errors,
            "notes": self.notes,
            "results_lines": self.results_lines,
        }


def _line_hash_ok(raw: bytes, event: dict[str, Any], stored: str, key: bytes | None) -> bool:
    """The writer's line is the canonical text plus the hash: check that first, as written;
    a log re-serialised by another tool is checked by recomputing the canonical text."""
    if len(raw) > _HASH_TAIL and raw.endswith(b'"}'):
        prefix = raw[:-_HASH_TAIL] + b"}"
        if raw[-_HASH_TAIL:-2] == b',"hash":"' + stored.encode("ascii", "replace"):
            try:
                if event_hash(prefix.decode("ascii"), key) == stored:
                    return True
            except UnicodeDecodeError:
                pass
    body = dict(event)
    body.pop("hash", None)
    return event_hash(canonical_json(body), key) == stored


def verify_audit(
    lines: Iterable[bytes],
    *,
    name: str = "audit log",
    key: bytes | None = None,
    expect_head: str | None = None,
    for_results: bool = True,
) -> Verification:
    """Walk the chain once, holding only the facts the results check needs (if it is wanted:
    ``for_results=False`` keeps memory flat)."""
    report = Verification(hash_alg="sha256" if key is None else "hmac-sha256")
    expected_seq = 0
    previous = GENESIS
    run: _Run | None = None
    head_found_at: int | None = None
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            report.error(Finding(name, number, "torn line: it does not end with a newline"))
            break
        line = raw.rstrip(b"\r\n")
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError
            seq, prev_hash, stored = event["seq"], event["prev_hash"], event["hash"]
            kind, batch_id = event["event"], event["batch_id"]
        except (ValueError, KeyError):
            report.error(Finding(name, number, "not a chained audit event (unreadable JSON)"))
            expected_seq += 1
            continue
        report.events += 1
        if kind == "batch.started" and event.get("hash_alg") == "hmac-sha256" and key is None:
            report.error(
                Finding(name, number, "this run's chain is keyed (HMAC): set the key to verify it")
            )
            break
        if not isinstance(stored, str) or not _line_hash_ok(line, event, stored, key):
            keyed = " (or the key is wrong)" if key is not None else ""
            report.error(Finding(name, number, f"hash does not match the event: edited{keyed}"))
        if seq != expected_seq:
            what = (
                "an event is missing before it, or events were reordered"
                if seq > expected_seq
                else "out of order (an event moved or repeated)"
            )
            report.error(Finding(name, number, f"seq {seq}, expected {expected_seq}: {what}"))
        elif prev_hash != previous:
            report.error(Finding(name, number, "prev_hash is not the previous event's hash"))
        previous = stored if isinstance(stored, str) else ""
        expected_seq = seq + 1 if isinstance(seq, int) else expected_seq + 1
        if stored == expect_head:
            head_found_at = number
        if kind == "batch.started":
            if run is not None and not run.sealed:
                report.notes.append(
                    f"batch {run.batch_id} (line {run.started_line}) was never sealed: the "
                    f"run was killed; batch {batch_id} continued the chain"
                )
            run = _Run(batch_id, number, seq if isinstance(seq, int) else -1)
            report.runs += 1
        elif run is None or run.batch_id != batch_id or run.sealed:
            report.error(
                Finding(name, number, f"event of batch {batch_id} outside that batch's run")
            )
            continue
        run.events += 1
        if for_results:
            _collect(report, event, kind, batch_id)
        if kind == "batch.finished":
            run.sealed = True
            run.stop_reason = str(event.get("stop_reason", ""))
            report.sealed.add(batch_id)
            if event.get("events") != run.events or event.get("first_seq") != run.first_seq:
                report.error(
                    Finding(
                        name,
                        number,
                        f"the seal counts {event.get('events')} events from seq "
                        f"{event.get('first_seq')}, the run has {run.events} from {run.first_seq}",
                    )
                )
        report.head, report.head_seq = stored, seq
    if number == 0:
        report.error(Finding(name, 0, "the audit log is empty"))
    elif run is not None and not run.sealed:
        report.error(
            Finding(name, number, f"missing seal: batch {run.batch_id} has no batch.finished")
        )
    if expect_head is not None:
        if head_found_at is None:
            report.error(
                Finding(name, number, f"the expected head {expect_head} is not in the log")
            )
        elif head_found_at != number:
            report.notes.append(
                f"the expected head is at line {head_found_at}; {number - head_found_at} "
                "events were appended after it"
            )
    return report


def _collect(report: Verification, event: dict[str, Any], kind: str, batch_id: str) -> None:
    if kind == "trade.fetched":
        report.fetched.setdefault(batch_id, set()).add(str(event.get("trade_id")))
    elif kind == "trade.pending":
        report.pending.setdefault(batch_id, set()).add(str(event.get("trade_id")))
    elif kind == "batch.committed":
        lines, digest = event.get("results_lines"), event.get("results_sha256")
        if isinstance(lines, int) and isinstance(digest, str):
            report.committed[batch_id] = (lines, digest)


@dataclass
class _BatchLines:
    count: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    checked: bool = False


def verify_results(report: Verification, lines: Iterable[bytes], *, name: str) -> None:
    """Check a results file against the facts ``verify_audit`` collected (adds findings)."""
    seen: dict[str, int] = {}
    batches: dict[str, _BatchLines] = {}
    foreign = 0
    written: dict[str, set[str]] = {}
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            report.error(Finding(name, number, "torn line: it does not end with a newline"))
            break
        try:
            record = json.loads(raw)
            trade_id, batch_id = str(record["trade_id"]), str(record["batch_id"])
        except (ValueError, KeyError, TypeError):
            report.error(Finding(name, number, "not a result record"))
            continue
        if trade_id in seen:
            report.error(
                Finding(
                    name, number, f"trade {trade_id} written twice (first at line {seen[trade_id]})"
                )
            )
        seen[trade_id] = number
        if not any(
            batch_id in known for known in (report.fetched, report.committed, report.sealed)
        ):
            foreign += 1
            continue
        if trade_id not in report.fetched.get(batch_id, set()):
            report.error(
                Finding(
                    name, number, f"trade {trade_id} has no trade.fetched event in batch {batch_id}"
                )
            )
        written.setdefault(batch_id, set()).add(trade_id)
        state = batches.setdefault(batch_id, _BatchLines())
        state.count += 1
        state.digest.update(raw)
        committed = report.committed.get(batch_id)
        if committed is not None and state.count == committed[0]:
            state.checked = True
            if state.digest.hexdigest() != committed[1]:
                report.error(
                    Finding(
                        name,
                        number,
                        f"the {committed[0]} lines of batch {batch_id} up to here do not hash "
                        "to the results_sha256 its audit log committed: a line was changed",
                    )
                )
    report.results_lines = number
    for batch_id, (count, _) in report.committed.items():
        state = batches.get(batch_id, _BatchLines())
        if count and not state.checked:
            report.error(
                Finding(
                    name,
                    number,
                    f"batch {batch_id} committed {count} result lines, the file holds "
                    f"{state.count}: lines were removed",
                )
            )
    for batch_id, fetched in report.fetched.items():
        missing = fetched - written.get(batch_id, set()) - report.pending.get(batch_id, set())
        if not missing:
            continue
        example = sorted(missing)[0]
        if batch_id in report.sealed:
            report.error(
                Finding(
                    name,
                    number,
                    f"{len(missing)} trade(s) of batch {batch_id} were fetched but have no "
                    f"result line, e.g. {example}",
                )
            )
        else:
            report.notes.append(
                f"{len(missing)} trade(s) fetched by the killed batch {batch_id} have no result "
                "line (killed between logging and writing them; a later run fetches them again)"
            )
    if foreign:
        report.notes.append(f"{foreign} result lines belong to batches not in this audit log")
