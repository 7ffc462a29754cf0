"""The command line: options, config precedence, exit codes and one-line messages."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trade_ingest.cli import app
from trade_ingest.simulator import GatewayConfig, SimulatedGateway

runner = CliRunner()


@pytest.fixture(scope="module")
def gateway() -> Iterator[SimulatedGateway]:
    with SimulatedGateway.in_thread(GatewayConfig()) as running:
        yield running


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("TRADE_INGEST_"):
            monkeypatch.delenv(name)


def test_help_documents_exit_codes() -> None:
    """--help lists the exit codes and the at-least-once nature of stdout."""
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for code in ("66", "73", "75", "78", "130"):
        assert code in result.output
    assert "at-least-once" in result.output


def test_version() -> None:
    """--version prints the version."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("trade-ingest ")


def test_stdin_to_stdout(gateway: SimulatedGateway, tmp_path: Path) -> None:
    """IDs on stdin, JSONL on stdout, audit log and summary elsewhere."""
    result = runner.invoke(
        app,
        ["run", "-", "--base-url", gateway.base_url, "--audit-log", "audit.jsonl", "-q"],
        input="T1\nT2\n",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["trade_id"] for line in lines) == ["T1", "T2"]
    audit = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit[0])["event"] == "batch.started"


def test_default_audit_and_failures_names(gateway: SimulatedGateway, tmp_path: Path) -> None:
    """Without paths, the audit log and failures file are named after the batch id."""
    result = runner.invoke(
        app, ["run", "-", "--base-url", gateway.base_url, "-o", "out.jsonl"], input="T1\nUNKNOWN\n"
    )
    assert result.exit_code == 1
    audits = list(tmp_path.glob("audit-*.jsonl"))
    failures = list(tmp_path.glob("failures-*.jsonl"))
    assert len(audits) == 1 and len(failures) == 1
    assert audits[0].name.removeprefix("audit-") == failures[0].name.removeprefix("failures-")
    assert "exit 1" in result.stderr
    assert "ingested 1" in result.stderr


def test_missing_input_is_66(gateway: SimulatedGateway) -> None:
    """A missing input file: one line, exit 66, no traceback."""
    result = runner.invoke(app, ["run", "nope.txt", "--base-url", gateway.base_url])
    assert result.exit_code == 66
    assert "nope.txt not found" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_unwritable_output_is_73(gateway: SimulatedGateway, tmp_path: Path) -> None:
    """An output that cannot be created: exit 73."""
    (tmp_path / "ids.txt").write_text("T1\n")
    result = runner.invoke(
        app, ["run", "ids.txt", "--base-url", gateway.base_url, "-o", "missing/dir/out.jsonl"]
    )
    assert result.exit_code == 73
    assert "cannot create results file" in result.stderr


def test_no_base_url_is_78() -> None:
    """No gateway configured: exit 78 saying how to give one."""
    result = runner.invoke(app, ["run", "-"], input="T1\n")
    assert result.exit_code == 78
    assert "--base-url" in result.stderr


def test_bad_config_value_is_78(tmp_path: Path) -> None:
    """A config typo names the setting."""
    (tmp_path / "c.toml").write_text("concurency = 3\n")
    result = runner.invoke(app, ["run", "-", "--config", "c.toml"], input="T1\n")
    assert result.exit_code == 78
    assert "did you mean 'concurrency'" in result.stderr


def test_bad_flag_is_2() -> None:
    """An unknown flag or a wrong type is a usage error."""
    assert runner.invoke(app, ["run", "--concurrency", "many"]).exit_code == 2
    assert runner.invoke(app, ["run", "--no-such-flag"]).exit_code == 2


def test_precedence_flag_over_env_over_file(
    gateway: SimulatedGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log's settings show flags > env > file."""
    (tmp_path / "c.toml").write_text(
        f'base_url = "{gateway.base_url}"\nconcurrency = 2\nmax_attempts = 2\nmax_wait = 9.0\n'
    )
    monkeypatch.setenv("TRADE_INGEST_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("TRADE_INGEST_CONCURRENCY", "5")
    result = runner.invoke(
        app,
        ["run", "-", "--config", "c.toml", "-c", "4", "--audit-log", "a.jsonl", "-q"],
        input="T1\n",
    )
    assert result.exit_code == 0, result.stderr
    settings = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])["settings"]
    assert (settings["concurrency"], settings["max_attempts"], settings["max_wait"]) == (4, 3, 9.0)


def test_token_never_printed(gateway: SimulatedGateway, tmp_path: Path) -> None:
    """The bearer token is sent but never appears in output or the audit log."""
    secret = "tok-supersecret-123"
    result = runner.invoke(
        app,
        ["run", "-", "--base-url", gateway.base_url, "--audit-log", "a.jsonl"],
        input="T1\n",
        env={"TRADE_INGEST_TOKEN": secret},
    )
    assert result.exit_code == 0
    assert secret not in result.output + result.stderr
    audit = (tmp_path / "a.jsonl").read_text()
    assert secret not in audit
    assert '"authenticated":true' in audit


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The demo ingests its sample batch through the real run path."""
    result = runner.invoke(app, ["demo", "--ids", "40", "--output-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.stderr
    assert "ingested" in result.stderr
    assert (tmp_path / "d" / "trades.jsonl").exists()
    assert (tmp_path / "d" / "audit.jsonl").exists()
