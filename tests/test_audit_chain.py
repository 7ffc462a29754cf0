"""The tamper-evident audit log: every kind of tampering is caught at its line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trade_ingest.audit import GENESIS, canonical_json, event_hash
from trade_ingest.cli import app
from trade_ingest.config import Settings
from trade_ingest.pipeline import Job, run_job
from trade_ingest.simulator import GatewayConfig, SimulatedGateway
from trade_ingest.verify import Verification, verify_audit, verify_results

pytestmark = pytest.mark.integration
KEY = "k3y-for-the-chain-0123456789"


@pytest.fixture(scope="module")
def gateway() -> Iterator[SimulatedGateway]:
    with SimulatedGateway.in_thread(GatewayConfig(unknown_rate=0.1)) as running:
        yield running


def two_runs(directory: Path, base_url: str, env: dict[str, str] | None = None) -> Job:
    """Two runs appended to one audit log and one results file (the second resumes)."""
    directory.mkdir(exist_ok=True)
    ids = directory / "ids.txt"
    ids.write_text("".join(f"T{n}\n" for n in range(25)))
    job = Job(
        settings=Settings(base_url=base_url, concurrency=4),
        input_path=ids,
        output_path=directory / "trades.jsonl",
        failures_path=directory / "failed.jsonl",
        audit_path=directory / "audit.jsonl",
        batch_id="B1",
    )
    first = run_job(job, env=env or {})
    ids.write_text("".join(f"T{n}\n" for n in range(40)))
    second = run_job(replace(job, batch_id="B2"), env=env or {})
    assert first.audit_head and second.audit_head != first.audit_head
    return job


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory, gateway: SimulatedGateway) -> Job:
    return two_runs(tmp_path_factory.mktemp("chain"), gateway.base_url)


def check(lines: list[bytes], key: bytes | None = None, **options: str) -> Verification:
    return verify_audit(lines, name="audit.jsonl", key=key, **options)  # type: ignore[arg-type]


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_untouched_log_verifies_and_runs_chain(logs: Job) -> None:
    """Both runs verify; the second's first event links to the first's seal."""
    lines = read_lines(logs.audit_path)
    verdict = check(lines)
    assert verdict.ok, verdict.errors
    assert verdict.runs == 2 and verdict.events == len(lines)
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["prev_hash"] == GENESIS
    second_start = next(e for e in events if e["event"] == "batch.started" and e["seq"] > 0)
    assert second_start["previous_head"] == events[second_start["seq"] - 1]["hash"]
    assert events[-1]["event"] == "batch.finished" and events[-1]["hash"] == verdict.head
    body = {k: v for k, v in events[5].items() if k != "hash"}
    assert hashlib.sha256(canonical_json(body).encode()).hexdigest() == events[5]["hash"]


def _flip_a_byte(lines: list[bytes]) -> list[bytes]:
    line = lines[9]
    index = line.index(b'"trade_id":"T') + len(b'"trade_id":"T')
    changed = line[:index] + (b"8" if line[index : index + 1] != b"8" else b"9") + line[index + 1 :]
    return [*lines[:9], changed, *lines[10:]]


TAMPERING: list[tuple[str, Callable[[list[bytes]], list[bytes]], int, str]] = [
    ("one byte changed", _flip_a_byte, 10, "hash does not match"),
    (
        "an event deleted",
        lambda ls: ls[:11] + ls[12:],
        12,
        "seq 12, expected 11: an event is missing",
    ),
    (
        "two events swapped",
        lambda ls: [*ls[:14], ls[15], ls[14], *ls[16:]],
        15,
        "seq 15, expected 14",
    ),
    ("last line truncated", lambda ls: [*ls[:-1], ls[-1][:40]], -1, "torn line"),
    ("the seal removed", lambda ls: ls[:-1], -2, "missing seal"),
]


@pytest.mark.parametrize(
    ("what", "tamper", "line", "problem"), TAMPERING, ids=[t[0] for t in TAMPERING]
)
def test_tampering_is_caught_at_its_line(
    logs: Job, what: str, tamper: Callable[[list[bytes]], list[bytes]], line: int, problem: str
) -> None:
    """Edit, delete, reorder, truncate, unseal: the first finding names the exact line."""
    lines = read_lines(logs.audit_path)
    tampered = tamper(lines)
    verdict = check(tampered)
    assert not verdict.ok
    first = verdict.errors[0]
    expected_line = line if line > 0 else len(lines) + line + 1
    assert first.line == expected_line, (what, verdict.errors)
    assert problem in first.problem


def _forged_event(previous: dict[str, object], key: bytes | None) -> bytes:
    forged: dict[str, object] = {
        "timestamp": "2026-11-28T23:59:59.000000Z",
        "event": "trade.fetched",
        "batch_id": previous["batch_id"],
        "trade_id": "FORGED-1",
        "attempt": 1,
        "status": 200,
        "seq": int(previous["seq"]) + 1,  # type: ignore[call-overload]
        "prev_hash": previous["hash"],
    }
    text = canonical_json(forged)
    return (text[:-1] + ',"hash":"' + event_hash(text, key) + '"}\n').encode()


def test_forged_event_without_the_key_is_caught(tmp_path: Path, gateway: SimulatedGateway) -> None:
    """A keyed chain: an event appended with a plain SHA-256 (no key) fails; so does
    verifying without the key."""
    job = two_runs(tmp_path, gateway.base_url, env={"TRADE_INGEST_AUDIT_KEY": KEY})
    lines = read_lines(job.audit_path)
    assert KEY not in job.audit_path.read_text()
    assert check(lines, key=KEY.encode()).ok
    assert check(lines, key=b"wrong").errors[0].line == 1
    unkeyed = check(lines)
    assert not unkeyed.ok and "keyed" in unkeyed.errors[0].problem
    forged = [*lines, _forged_event(json.loads(lines[-1]), key=None)]
    verdict = check(forged, key=KEY.encode())
    assert [e.line for e in verdict.errors][:1] == [len(forged)]
    assert "hash does not match" in verdict.errors[0].problem


def test_event_appended_after_the_seal_is_caught(logs: Job) -> None:
    """Even with a valid hash (no key), an event after the seal has no run to belong to."""
    lines = read_lines(logs.audit_path)
    forged = [*lines, _forged_event(json.loads(lines[-1]), key=None)]
    verdict = check(forged)
    assert verdict.errors[0].line == len(forged)
    assert "outside that batch's run" in verdict.errors[0].problem


def test_expect_head(logs: Job) -> None:
    """A head kept elsewhere must be on the chain; an unknown one fails."""
    lines = read_lines(logs.audit_path)
    first_seal = next(json.loads(x) for x in lines if b'"event":"batch.finished"' in x)
    assert check(lines, expect_head=check(lines).head or "").ok
    earlier = check(lines, expect_head=first_seal["hash"])
    assert earlier.ok and "appended after it" in earlier.notes[0]
    assert not check(lines, expect_head="f" * 64).ok


def results_verdict(job: Job, results: list[bytes]) -> Verification:
    verdict = check(read_lines(job.audit_path))
    verify_results(verdict, results, name="trades.jsonl")
    return verdict


def test_results_match_the_log(logs: Job) -> None:
    """Every result has its trade.fetched and the committed hash of its batch."""
    assert logs.output_path is not None
    verdict = results_verdict(logs, read_lines(logs.output_path))
    assert verdict.ok, verdict.errors
    assert verdict.results_lines == len(read_lines(logs.output_path))


def _edit_price(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[3])
    record["trade"]["price"] = "1.00"
    return [*lines[:3], (json.dumps(record, separators=(",", ":")) + "\n").encode(), *lines[4:]]


RESULT_TAMPERING: list[tuple[str, Callable[[list[bytes]], list[bytes]], str]] = [
    ("a price changed", _edit_price, "do not hash to the results_sha256"),
    ("a line deleted", lambda ls: ls[:2] + ls[3:], "lines were removed"),
    ("a line repeated", lambda ls: [*ls, ls[0]], "written twice"),
    (
        "a line invented",
        lambda ls: [*ls, ls[0].replace(b'"trade_id":"', b'"trade_id":"NEW-', 1)],
        "no trade.fetched event",
    ),
]


@pytest.mark.parametrize(
    ("what", "tamper", "problem"), RESULT_TAMPERING, ids=[t[0] for t in RESULT_TAMPERING]
)
def test_results_tampering_is_caught(
    logs: Job, what: str, tamper: Callable[[list[bytes]], list[bytes]], problem: str
) -> None:
    """Changed, removed, repeated or invented result lines do not pass."""
    assert logs.output_path is not None
    verdict = results_verdict(logs, tamper(read_lines(logs.output_path)))
    assert not verdict.ok
    assert any(problem in e.problem for e in verdict.errors), (what, verdict.errors)


runner = CliRunner()


def test_verify_command(logs: Job, tmp_path: Path) -> None:
    """Exit 0 and the head when intact; exit 1 naming the line when not; 66 when missing."""
    assert logs.output_path is not None
    ok = runner.invoke(
        app, ["audit", "verify", str(logs.audit_path), "--results", str(logs.output_path)]
    )
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.stdout and "NOT" not in ok.stdout
    broken = tmp_path / "audit.jsonl"
    broken.write_bytes(b"".join(_flip_a_byte(read_lines(logs.audit_path))))
    bad = runner.invoke(app, ["audit", "verify", str(broken)])
    assert bad.exit_code == 1
    assert f"{broken} line 10: hash does not match" in bad.stderr
    as_json = runner.invoke(app, ["audit", "verify", str(broken), "--json"])
    assert json.loads(as_json.stdout)["ok"] is False
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 66
