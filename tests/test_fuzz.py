"""Property and fuzz tests: arbitrary input never raises anything but our own errors."""

from __future__ import annotations

import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trade_ingest.config import Settings, load_settings
from trade_ingest.errors import ConfigError
from trade_ingest.ids import IdRules, why_invalid
from trade_ingest.payload import InvalidBody, check_trade_body
from trade_ingest.policy import RETRYABLE, Cause, classify_status, parse_quota, wait_hint

HEADER_NAMES = [
    "retry-after",
    "retry-after-ms",
    "date",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
]
# Header text as gateways might mangle it: numbers, dates, structured fields, junk.
HEADER_TEXT = st.one_of(
    st.text(max_size=80),
    st.from_regex(
        r'"?[a-z]{0,8}"?;q=-?\d{0,12};w=-?\d{0,8}(, ?"?[a-z]{0,5}"?;r=-?\d{0,9};t=-?\d{0,9})?'
    ),
    st.from_regex(r"limit=-?\d{0,12}, ?remaining=-?\d{0,12}, ?reset=-?\d{0,12}(\.\d{0,4})?"),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_TEXT, max_size=6), st.floats(0, 4e9))
def test_header_parsers_never_raise(headers: dict[str, str], now: float) -> None:
    """Any combination of rate-limit headers: a sane quota and hint, or none; never an error."""
    quota = parse_quota(headers, now)
    if quota is not None:
        assert quota.limit is None or quota.limit >= 0
        assert quota.remaining is None or quota.remaining >= 0
        assert quota.reset is None or (math.isfinite(quota.reset) and quota.reset >= 0)
        assert quota.window is None or (math.isfinite(quota.window) and quota.window > 0)
    hint = wait_hint(headers, now)
    if hint is not None:
        assert math.isfinite(hint.delay) and hint.delay >= 0


@given(st.integers(-1000, 2000))
def test_every_status_has_one_meaning(status: int) -> None:
    """2xx is a trade; 429, 408 and 5xx (and nonsense above) are retried; 3xx is a redirect
    never followed; everything else, 1xx included, is a permanent client error."""
    cause = classify_status(status)
    if 200 <= status < 300:
        assert cause is None
    elif status in (408, 429) or status >= 500:
        assert cause in RETRYABLE
    elif 300 <= status < 400:
        assert cause is Cause.REDIRECT
    else:
        assert cause is Cause.CLIENT_ERROR and cause not in RETRYABLE


@given(
    st.binary(max_size=400),
    st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12),
)
def test_body_check_raises_only_invalid_body(raw: bytes, trade_id: str) -> None:
    """Arbitrary bytes: accepted as the requested trade's object, or InvalidBody."""
    try:
        text = check_trade_body(raw, trade_id)
    except InvalidBody:
        return
    assert isinstance(text, str) and text.lstrip().startswith("{")


@given(st.text(max_size=300))
def test_id_validation_never_raises(text: str) -> None:
    """An ID is valid (and then safe in a URL path) or refused with a reason."""
    why = why_invalid(text.strip(), IdRules(max_length=64))
    if why is None:
        assert not set(text.strip()) & set("/\\?#% \n\r\t\x00\u2028")


SETTING_NAMES = [name for name in Settings.__dataclass_fields__]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(SETTING_NAMES), st.text(max_size=30), max_size=5))
def test_environment_values_only_raise_config_errors(env_values: dict[str, str]) -> None:
    """Any text in TRADE_INGEST_* variables: settings, or a ConfigError naming the setting."""
    env = {f"TRADE_INGEST_{name.upper()}": value for name, value in env_values.items()}
    try:
        load_settings(None, env, {})
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert "setting" in message and "\n" not in message


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_config_file_text_only_raises_config_errors(tmp_path: Path, text: str) -> None:
    """Any config file content: settings, or a one-line ConfigError."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path, {}, {})
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert "config file" in message or "setting" in message


@pytest.mark.parametrize(
    "text",
    [
        'concurrency = "eight"',
        "concurrency = 1e400",
        "concurrency = [1]",
        "max_wait = inf",
        "rate_limit = 30",
    ],
)
def test_config_type_mistakes_name_the_setting(tmp_path: Path, text: str) -> None:
    """Wrong types in the file are refused with the setting's name."""
    path = tmp_path / "config.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match="setting '"):
        load_settings(path, {}, {})
