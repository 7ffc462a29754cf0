"""Errors a user can cause, and the exit code each one maps to.

Exit codes follow sysexits(3) where one fits, so cron wrappers can tell
"try again later" from "fix your input"::

    IngestError                     (exit code on the class)
    ├── UsageError                  2   bad flag combination
    ├── InputNotFound               66  EX_NOINPUT: input file missing or unreadable
    ├── OutputError                 73  EX_CANTCREAT: an output file cannot be created
    │   └── LedgerError             73  the results file holds a line that is not a result
    ├── OutputWriteError            74  EX_IOERR: writing an output failed mid-run (disk full)
    ├── LockHeld                    75  EX_TEMPFAIL: another run is writing the same output
    ├── ConfigError                 78  EX_CONFIG: a setting is invalid
    └── LockWaitInterrupted         130 Ctrl-C while waiting for another run's lock

Run outcomes that are not errors have their own codes (see ``ExitCode``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code ``trade-ingest`` can return; documented in README and --help."""

    OK = 0
    TRADES_FAILED = 1
    USAGE = 2
    NO_INPUT = 66
    CANT_CREATE = 73
    IO_ERROR = 74
    TEMP_FAIL = 75
    CONFIG = 78
    INTERRUPTED = 130
    TERMINATED = 143


class IngestError(Exception):
    """Base of every error a user can cause; its message is one line saying what to do."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(IngestError):
    exit_code = ExitCode.USAGE


class InputNotFound(IngestError):
    exit_code = ExitCode.NO_INPUT


class OutputError(IngestError):
    exit_code = ExitCode.CANT_CREATE


class OutputWriteError(IngestError):
    exit_code = ExitCode.IO_ERROR


class ConfigError(IngestError):
    exit_code = ExitCode.CONFIG


class LedgerError(OutputError):
    """The results file cannot serve as the ledger (a line that is not a result)."""


class LockHeld(IngestError):
    """Another run holds the output's lock: try again later."""

    exit_code = ExitCode.TEMP_FAIL


class LockWaitInterrupted(IngestError):
    exit_code = ExitCode.INTERRUPTED
