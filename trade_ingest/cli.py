"""The ``trade-ingest`` command line: parse, build, run, map errors to exit codes.

This is the only module that imports Typer. It holds no logic a test would
want to call without Typer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, BinaryIO, NoReturn

import typer
from rich.console import Console

from trade_ingest import __version__
from trade_ingest.audit import Redactor
from trade_ingest.config import load_settings
from trade_ingest.errors import ConfigError, ExitCode, IngestError, UsageError
from trade_ingest.summary import EXIT_MEANINGS, ProgressDisplay, print_summary, stderr_console

EXIT_CODES_HELP = "Exit codes: " + "; ".join(
    f"{int(code)} {meaning}" for code, meaning in EXIT_MEANINGS.items()
)

app = typer.Typer(
    name="trade-ingest",
    help="Fetch trade records from rate-limited gateways, exactly as they were sent.",
    epilog=EXIT_CODES_HELP,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
)


def _fail(message: str, code: ExitCode) -> NoReturn:
    stderr_console().print(f"[red]trade-ingest:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(int(code))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trade-ingest {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Fetch trade records from rate-limited gateways, exactly as they were sent."""


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit cannot complain of a broken pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None


@app.command(epilog=EXIT_CODES_HELP)
def run(
    input_file: Annotated[
        str,
        typer.Argument(
            metavar="INPUT", help="File of trade IDs, one a line; - or nothing for stdin."
        ),
    ] = "-",
    base_url: Annotated[
        str | None, typer.Option(help="Gateway base URL; trades are GET {base_url}/trades/{id}.")
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Results JSONL file: appended to, fsync'd in batches, locked while a run "
            "writes it, and the resume ledger. Default - is stdout: at-least-once only, "
            "since stdout cannot be fsync'd, locked or resumed.",
        ),
    ] = "-",
    failures: Annotated[
        Path | None,
        typer.Option(help="Failures JSONL file. Default: failures-{batch_id}.jsonl."),
    ] = None,
    audit_log: Annotated[
        Path | None,
        typer.Option(help="Audit log JSONL file. Default: audit-{batch_id}.jsonl."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Requests in flight at once.")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts per trade at most.")] = None,
    max_wait: Annotated[
        float | None,
        typer.Option(help="Longest single wait in seconds; a longer server hint defers."),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(help="The gateway's documented limit, e.g. 30/min or 5/s: paced under it."),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="Stop cleanly after this long (e.g. 45m), leaving the rest deferred (exit 75)."
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(help="File holding the bearer token (mode 600). Never pass a token itself."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Skip every trade already in the results file (the default, right for cron: "
            "re-running the same command after a kill fetches only what is missing, whatever "
            "the input's order). --no-resume refuses a results file that already holds trades.",
        ),
    ] = True,
    wait_lock: Annotated[
        bool,
        typer.Option(
            "--wait-lock",
            help="If another run is writing the same results file, wait for it (within "
            "--deadline) instead of exiting 75 at once.",
        ),
    ] = False,
    retry_failed: Annotated[
        str | None,
        typer.Option(
            "--retry-failed",
            metavar="FAILURES",
            help="Fetch again the trades of this failures file that are worth retrying "
            "(all but invalid IDs, redirects, 400/404/405/410/414 and oversized bodies), "
            "instead of reading INPUT.",
        ),
    ] = None,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(help="Seconds in-flight trades may take to finish after SIGINT/SIGTERM."),
    ] = None,
    no_uvloop: Annotated[
        bool, typer.Option("--no-uvloop", help="Run on asyncio's own event loop, not uvloop.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML config file (default: $TRADE_INGEST_CONFIG)."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, no summary.")
    ] = False,
) -> None:
    """Fetch every trade ID in INPUT; results as JSON Lines, failures and audit log beside."""
    from trade_ingest.clock import SystemClock
    from trade_ingest.pipeline import Job, new_batch_id, run_job

    env = dict(os.environ)
    flags = {
        "base_url": base_url,
        "concurrency": concurrency,
        "max_attempts": max_attempts,
        "max_wait": max_wait,
        "rate_limit": rate_limit,
        "deadline": deadline,
        "token_file": token_file,
        "shutdown_grace": shutdown_grace,
        "event_loop": "asyncio" if no_uvloop else None,
    }
    try:
        settings = load_settings(config, env, flags)
        if not settings.base_url:
            raise ConfigError(
                "no gateway given: pass --base-url, set TRADE_INGEST_BASE_URL, or set "
                "base_url in the config file (try `trade-ingest demo` to see it work)"
            )
        if retry_failed is not None:
            if input_file != "-":
                raise UsageError("give either INPUT or --retry-failed FAILURES, not both")
            input_file = retry_failed
        input_path = None if input_file == "-" else Path(input_file)
        if input_path is None and sys.stdin.isatty():
            raise UsageError("no input: give a file of trade IDs, or pipe IDs into stdin")
        batch_id = new_batch_id(SystemClock().wall())
        job = Job(
            settings=settings,
            input_path=input_path,
            output_path=None if output == "-" else Path(output),
            failures_path=failures or Path(f"failures-{batch_id}.jsonl"),
            audit_path=audit_log or Path(f"audit-{batch_id}.jsonl"),
            batch_id=batch_id,
            resume=resume,
            wait_lock=wait_lock,
            retry_failed=retry_failed is not None,
        )
        console = stderr_console()
        total = _count_lines(input_path) if input_path and console.is_terminal else None
        with ProgressDisplay(console, enabled=not quiet, total=total) as progress:
            report = run_job(job, env=env, on_progress=progress.update)
    except IngestError as exc:
        message = Redactor([env.get("TRADE_INGEST_TOKEN", "")]).scrub(str(exc))
        _fail(message, exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C while the batch's own handler was not in place
        _fail("interrupted; run the same command again to resume", ExitCode.INTERRUPTED)
    if report.stop_reason == "output_closed":
        # The reader of stdout went away (`| head`): end quietly, as `cat` would.
        _silence_stdout()
        raise typer.Exit(int(report.exit_code))
    if not quiet:
        print_summary(console, report)
    elif report.message:
        _fail(report.message, report.exit_code)
    raise typer.Exit(int(report.exit_code))


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8080,
    limiter: Annotated[
        str, typer.Option(help="Rate limiter: fixed (window), sliding (log) or token (bucket).")
    ] = "fixed",
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests allowed per window (default: unlimited).")
    ] = None,
    window: Annotated[float, typer.Option(help="Rate-limit window in seconds.")] = 1.0,
    burst: Annotated[
        int | None, typer.Option(help="Token bucket capacity (default: --rate-limit).")
    ] = None,
    window_phase: Annotated[
        float | None,
        typer.Option(
            help="Fixed window: its first turn comes this share of a window after the first "
            "request (default: windows turn at multiples of --window on the wall clock)."
        ),
    ] = None,
    retry_after: Annotated[
        str, typer.Option(help="Retry-After on 429: seconds, http-date or none.")
    ] = "seconds",
    limit_headers: Annotated[
        str,
        typer.Option(
            help="Quota headers: delta or epoch (X-RateLimit-*), ietf (RateLimit-Policy and "
            "RateLimit), or none."
        ),
    ] = "delta",
    penalty: Annotated[
        bool, typer.Option(help="A request during a Retry-After period restarts the penalty.")
    ] = False,
    clock_offset: Annotated[
        float, typer.Option(help="Seconds the server's clock is ahead of the real time.")
    ] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Median added latency.")] = 0.0,
    latency_sigma: Annotated[
        float, typer.Option(help="Log-normal shape of the latency (0 = constant).")
    ] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests starting a 5xx run.")] = 0.0,
    error_burst: Annotated[int, typer.Option(help="Length of each run of 5xx answers.")] = 1,
    drop_rate: Annotated[
        float, typer.Option(help="Share of requests whose connection is closed unanswered.")
    ] = 0.0,
    unknown_rate: Annotated[float, typer.Option(help="Share of trade IDs that are 404.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for latency and faults.")] = 0,
) -> None:
    """Run the simulated exchange gateway on loopback until Ctrl-C."""
    from trade_ingest.simulator import GatewayConfig, run_forever

    try:
        gateway_config = GatewayConfig(
            host=host,
            port=port,
            limiter=limiter,  # type: ignore[arg-type]
            rate_limit=rate_limit,
            window=window,
            burst=burst,
            window_phase=window_phase,
            retry_after=retry_after,  # type: ignore[arg-type]
            limit_headers=limit_headers,  # type: ignore[arg-type]
            penalty=penalty,
            clock_offset=clock_offset,
            latency_ms=latency_ms,
            latency_sigma=latency_sigma,
            error_rate=error_rate,
            error_burst=error_burst,
            drop_rate=drop_rate,
            unknown_rate=unknown_rate,
            seed=seed,
        )
    except ValueError as exc:
        _fail(str(exc), ExitCode.USAGE)

    def ready(base_url: str) -> None:
        typer.echo(f"simulated gateway listening on {base_url}")
        sys.stdout.flush()

    try:
        run_forever(gateway_config, on_ready=ready)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}; try --port 0", ExitCode.USAGE)


@app.command()
def demo(
    ids: Annotated[int, typer.Option(help="How many sample trade IDs to ingest.")] = 300,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 8,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where the demo writes its files (default: a temp dir).")
    ] = None,
) -> None:
    """Start the simulated gateway, ingest a sample batch through `run`, show the summary."""
    from trade_ingest.demo import accounted_for, run_demo

    if not 1 <= ids <= 100_000:
        _fail("--ids must be between 1 and 100000", ExitCode.USAGE)
    directory = output_dir or Path(tempfile.mkdtemp(prefix="trade-ingest-demo-"))
    console = stderr_console()
    console.print(
        f"demo: {ids} trade IDs against a simulated gateway allowing "
        f"60 requests/s, with 3% server errors and some unknown IDs"
    )
    try:
        with ProgressDisplay(console, enabled=True, total=ids) as progress:
            report, server = run_demo(directory, ids, concurrency, progress.update)
    except IngestError as exc:
        _fail(str(exc), exc.exit_code)
    print_summary(console, report)
    console.print(
        f"  gateway saw {server['requests']} requests, {server['answered_429']} answered 429"
    )
    console.print(f"  files in {directory}")
    console.print(
        f"  then try: trade-ingest report {directory / 'audit.jsonl'}\n"
        f"            trade-ingest audit verify {directory / 'audit.jsonl'} "
        f"--results {directory / 'trades.jsonl'}",
        markup=False,
    )
    console.print(
        "  (the demo asks for unknown and malformed IDs on purpose, so some trades fail; "
        "the demo itself succeeded when nothing is left pending)"
    )
    if not accounted_for(report.stats):
        raise typer.Exit(int(report.exit_code))


audit_app = typer.Typer(
    help="Check an audit log's hash chain.", no_args_is_help=True, add_completion=False
)
app.add_typer(audit_app, name="audit")

VERIFY_EXIT_HELP = (
    "Exit codes: 0 intact; 1 not intact (the first broken line is named); 66 unreadable."
)


def _open_lines(path: Path, what: str) -> BinaryIO:
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        return path.open("rb")
    except OSError as exc:
        _fail(f"cannot read {what} {path}: {exc.strerror}", ExitCode.NO_INPUT)


@audit_app.command(epilog=VERIFY_EXIT_HELP)
def verify(
    audit_log: Annotated[Path, typer.Argument(metavar="AUDIT_LOG", help="The audit log (JSONL).")],
    results: Annotated[
        Path | None,
        typer.Option(help="Also check this results file against the log, line by line."),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            metavar="HASH",
            help="A head hash kept elsewhere (a run's summary): it must be in the log.",
        ),
    ] = None,
    key_env: Annotated[
        str,
        typer.Option(help="Environment variable holding the chain's HMAC key, if it is keyed."),
    ] = "TRADE_INGEST_AUDIT_KEY",
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Recompute AUDIT_LOG's hash chain: the first edited, missing, reordered or torn line."""
    from trade_ingest.verify import verify_audit, verify_results

    key = os.environ.get(key_env, "").encode() or None
    with _open_lines(audit_log, "audit log") as lines:
        verdict = verify_audit(
            lines,
            name=str(audit_log),
            key=key,
            expect_head=expect_head,
            for_results=results is not None,
        )
    if results is not None:
        with _open_lines(results, "results file") as lines:
            verify_results(verdict, lines, name=str(results))
    if as_json:
        typer.echo(json.dumps(verdict.summary(), indent=2))
    else:
        console = stderr_console()
        for note in verdict.notes:
            console.print(f"note: {note}", markup=False)
        for finding in verdict.errors:
            console.print(f"[red]broken:[/] {finding}", highlight=False)
        if verdict.more_errors:
            console.print(f"... and {verdict.more_errors} more problems")
        state = "intact" if verdict.ok else "NOT intact"
        checked = (
            f", {verdict.results_lines} result lines" if verdict.results_lines is not None else ""
        )
        typer.echo(
            f"{audit_log}: {state}: {verdict.events} events in {verdict.runs} run(s){checked}; "
            f"{verdict.hash_alg} head {verdict.head} (seq {verdict.head_seq})"
        )
    raise typer.Exit(0 if verdict.ok else 1)


@app.command("report")
def report_command(
    audit_log: Annotated[Path, typer.Argument(metavar="AUDIT_LOG", help="The audit log (JSONL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    top: Annotated[int, typer.Option(help="How many of the slowest trades to list.")] = 10,
) -> None:
    """What happened in a run, from its audit log alone: outcomes, pauses, latency, pace."""
    from trade_ingest.report import build_report, render_report

    if not 0 <= top <= 1000:
        _fail("--top must be between 0 and 1000", ExitCode.USAGE)
    with _open_lines(audit_log, "audit log") as lines:
        report = build_report(lines, top=top)
    if not report.events:
        _fail(f"{audit_log} holds no audit events", ExitCode.NO_INPUT)
    if as_json:
        typer.echo(json.dumps(report.as_dict(top), indent=2))
    else:
        render_report(Console(highlight=False, soft_wrap=True), report, top)


def main() -> None:
    """Entry point: user errors are one line; an unexpected error says how to get details."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # a bug: still no traceback (it could carry secrets)
        if os.environ.get("TRADE_INGEST_DEBUG"):
            raise
        token = os.environ.get("TRADE_INGEST_TOKEN", "")
        text = Redactor([token]).scrub(f"{type(exc).__name__}: {exc}")
        print(
            f"trade-ingest: internal error ({text}); run again with TRADE_INGEST_DEBUG=1 "
            "for details, and please report it",
            file=sys.stderr,
        )
        raise SystemExit(70) from None
