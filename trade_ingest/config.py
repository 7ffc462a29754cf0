"""Settings as one frozen value, merged once at start-up.

Precedence: flags > environment (``TRADE_INGEST_<NAME>``) > TOML file > defaults.
Every invalid value is rejected here with a message naming the setting and
where it came from. ``config.example.toml`` documents each field below.
"""

from __future__ import annotations

import ipaddress
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trade_ingest.errors import ConfigError
from trade_ingest.pacing import parse_duration, parse_rate
from trade_ingest.policy import RetryPolicy

ENV_PREFIX = "TRADE_INGEST_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that shapes a run; paths of the run's own files are flags of ``run``."""

    base_url: str = ""
    concurrency: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 10.0
    pool_timeout: float = 10.0
    # Whole-attempt deadline: a server dripping a byte a second never trips the
    # per-read timeout, so one attempt as a whole is bounded too.
    attempt_timeout: float = 60.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_wait: float = 300.0
    release_jitter: float = 0.25
    # A documented gateway limit such as "30/min": paced below it from the first request.
    rate_limit: str = ""
    # Stop cleanly, leaving the rest for the next run, rather than wait past this ("45m").
    deadline: str = ""
    retry_budget: float = 0.2
    retry_budget_min: int = 10
    max_id_length: int = 128
    id_pattern: str = ""
    max_body_bytes: int = 1_048_576
    # After SIGINT/SIGTERM, seconds in-flight trades may take to finish before
    # they are recorded as pending.
    shutdown_grace: float = 5.0
    token_env: str = "TRADE_INGEST_TOKEN"  # noqa: S105 - the variable's name, not a token
    token_file: str = ""
    allow_insecure_http: bool = False
    # A PEM file of CA certificates for a private PKI; empty means the system's store.
    ca_bundle: str = ""
    # Honour HTTP(S)_PROXY / ALL_PROXY / NO_PROXY and SSL_CERT_FILE from the environment.
    trust_env: bool = True
    # What carries httpx's requests: "aiohttp" (about half the CPU a trade) or "httpcore"
    # (httpx's own transport: what respx and other httpx mocking tools intercept).
    http_transport: str = "aiohttp"
    # "auto": uvloop when it is installed, else asyncio's loop; "uvloop" or "asyncio" to choose.
    event_loop: str = "auto"
    # The environment variable holding a key for the audit log's chain (HMAC-SHA256).
    audit_key_env: str = "TRADE_INGEST_AUDIT_KEY"

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            max_wait=self.max_wait,
            release_jitter=self.release_jitter,
        )

    def rate_per_second(self) -> float | None:
        return parse_rate(self.rate_limit) if self.rate_limit else None

    def deadline_seconds(self) -> float | None:
        return parse_duration(self.deadline) if self.deadline else None

    def redacted(self) -> dict[str, Any]:
        """The settings as the audit log may show them: no credentials in the URL."""
        shown = asdict(self)
        shown["base_url"] = redact_url(self.base_url)
        return shown


_FIELDS = {f.name: f for f in fields(Settings)}
_TYPES: dict[str, type] = {
    name: {"int": int, "float": float, "bool": bool, "str": str}[str(f.type)]
    for name, f in _FIELDS.items()
}


def redact_url(url: str) -> str:
    """The URL without user info and with the query's values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{p.partition('=')[0]}=***" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _coerce(name: str, value: object, origin: str) -> object:
    want = _TYPES[name]
    where = f"setting '{name}' (from {origin})"
    if isinstance(value, str) and want is not str:
        text = value.strip()
        try:
            if want is bool:
                lowered = text.lower()
                if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(text)
                return lowered in {"1", "true", "yes", "on"}
            return want(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {want.__name__}, got {value!r}") from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in _FIELDS:
            close = get_close_matches(key, _FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"config file {path}: unknown setting '{key}'{hint}")
    return data


def load_settings(
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object | None],
) -> Settings:
    """Merge defaults, the TOML file, the environment and flags (``None`` = not given)."""
    merged: dict[str, object] = {}
    path = config_file
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is not None:
        for key, value in _read_toml(path).items():
            merged[key] = _coerce(key, value, str(path))
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            merged[name] = _coerce(name, env[env_name], env_name)
    for name, value in flags.items():
        if value is not None:
            merged[name] = _coerce(name, value, "--" + name.replace("_", "-"))
    settings = Settings(**merged)  # type: ignore[arg-type]
    validate(settings)
    return settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(settings: Settings) -> None:
    """Reject values no run could succeed with, naming the setting."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"setting '{name}' {why}")

    positive = ("connect_timeout", "read_timeout", "write_timeout", "pool_timeout")
    for name in (*positive, "attempt_timeout", "backoff_base"):
        value = getattr(settings, name)
        if not value > 0 or value == float("inf"):
            raise bad(name, f"must be a positive number of seconds, got {value!r}")
    if not 1 <= settings.concurrency <= 1024:
        raise bad("concurrency", f"must be between 1 and 1024, got {settings.concurrency}")
    if not 1 <= settings.max_attempts <= 100:
        raise bad("max_attempts", f"must be between 1 and 100, got {settings.max_attempts}")
    if not settings.backoff_base <= settings.backoff_max < float("inf"):
        raise bad("backoff_max", "must be at least backoff_base and finite")
    if not 0 <= settings.max_wait < float("inf"):
        raise bad("max_wait", f"must be zero or more seconds, got {settings.max_wait!r}")
    if not 0 <= settings.release_jitter <= 60:
        raise bad("release_jitter", "must be between 0 and 60 seconds")
    if not 1 <= settings.max_id_length <= 100_000:
        raise bad("max_id_length", "must be between 1 and 100000")
    if settings.max_body_bytes < 2:
        raise bad("max_body_bytes", "must be at least 2")
    if settings.id_pattern:
        try:
            re.compile(settings.id_pattern)
        except re.error as exc:
            raise bad("id_pattern", f"is not a valid regular expression: {exc}") from None
    if settings.rate_limit:
        try:
            settings.rate_per_second()
        except ValueError:
            raise bad(
                "rate_limit", f"must look like 30/min, 5/s or 1/5s, got {settings.rate_limit!r}"
            ) from None
    if settings.deadline:
        try:
            if not settings.deadline_seconds():
                raise ValueError
        except ValueError:
            raise bad(
                "deadline",
                f"must be a duration such as 45m, 90s or 1h30m, got {settings.deadline!r}",
            ) from None
    if not 0 <= settings.retry_budget <= 100:
        raise bad("retry_budget", "must be between 0 and 100 retries per request")
    if settings.http_transport not in ("httpcore", "aiohttp"):
        raise bad("http_transport", f"must be httpcore or aiohttp, got {settings.http_transport!r}")
    if settings.event_loop not in ("auto", "uvloop", "asyncio"):
        raise bad("event_loop", f"must be auto, uvloop or asyncio, got {settings.event_loop!r}")
    if not 0 <= settings.shutdown_grace <= 600:
        raise bad("shutdown_grace", "must be between 0 and 600 seconds")
    if settings.retry_budget_min < 0:
        raise bad("retry_budget_min", "must be zero or more")
    if settings.base_url:
        validate_base_url(settings.base_url, settings.allow_insecure_http)
    if settings.ca_bundle and not Path(settings.ca_bundle).is_file():
        raise bad("ca_bundle", f"{settings.ca_bundle!r} is not a readable file of PEM certificates")


def validate_base_url(url: str, allow_insecure_http: bool) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        host, parts = "", urlsplit("")
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"setting 'base_url' must be an http(s) URL such as https://gateway.example.com, "
            f"got {redact_url(url)!r}"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "setting 'base_url' must not carry credentials; put the token in the "
            "environment variable named by 'token_env' or in 'token_file'"
        )
    if parts.scheme == "http" and not _is_loopback(host) and not allow_insecure_http:
        raise ConfigError(
            f"setting 'base_url' uses plain http to {host}; use https, or set "
            "allow_insecure_http = true if this network is trusted"
        )


def load_token(settings: Settings, env: Mapping[str, str]) -> str | None:
    """The bearer token, from ``token_file`` or the ``token_env`` variable; never a flag."""
    if settings.token_file:
        path = Path(settings.token_file)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"token file {path} is readable by other users; run: chmod 600 {path}"
                )
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"setting 'token_file': {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"setting 'token_file': cannot read {path}: {exc}") from None
        if not token:
            raise ConfigError(f"setting 'token_file': {path} is empty")
        return token
    token = env.get(settings.token_env, "").strip()
    return token or None
