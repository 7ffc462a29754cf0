"""Settings: TOML, environment and flags merged once, invalid values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trade_ingest.config import Settings, load_settings, load_token, redact_url
from trade_ingest.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    """With nothing given, the defaults of Settings apply."""
    assert load_settings(None, {}, {}) == Settings()


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    """flags > env > file > defaults, setting by setting."""
    path = write(tmp_path, 'concurrency = 2\nmax_attempts = 3\nbase_url = "https://a.example"\n')
    env = {"TRADE_INGEST_MAX_ATTEMPTS": "7", "TRADE_INGEST_READ_TIMEOUT": "12.5"}
    settings = load_settings(path, env, {"concurrency": 16, "max_wait": None})
    assert settings.concurrency == 16  # flag
    assert settings.max_attempts == 7  # env over file
    assert settings.read_timeout == 12.5  # env over default
    assert settings.base_url == "https://a.example"  # file
    assert settings.max_wait == Settings().max_wait  # flag not given


def test_config_file_from_environment(tmp_path: Path) -> None:
    """TRADE_INGEST_CONFIG names the file when --config is not given."""
    path = write(tmp_path, "concurrency = 3\n")
    assert load_settings(None, {"TRADE_INGEST_CONFIG": str(path)}, {}).concurrency == 3


def test_example_config_is_valid_and_complete() -> None:
    """config.example.toml documents every setting and loads to the defaults."""
    path = Path(__file__).parent.parent / "config.example.toml"
    text = path.read_text(encoding="utf-8")
    for name in Settings.__dataclass_fields__:
        assert f"{name} =" in text, name
    loaded = load_settings(path, {}, {})
    assert loaded == Settings(base_url=loaded.base_url)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurency = 4\n", "unknown setting 'concurency'; did you mean 'concurrency'?"),
        ("concurrency = 'many'\n", "setting 'concurrency' (from"),
        ("concurrency = 0\n", "setting 'concurrency' must be between 1 and 1024, got 0"),
        ("read_timeout = -1\n", "setting 'read_timeout' must be a positive number"),
        ("max_attempts = true\n", "setting 'max_attempts' (from"),
        ("id_pattern = '('\n", "setting 'id_pattern' is not a valid regular expression"),
        ("base_url = 'ftp://x'\n", "setting 'base_url' must be an http(s) URL"),
        ("base_url = 'http://gateway.example.com'\n", "uses plain http to gateway.example.com"),
        ("base_url = 'https://user:pw@gateway.example.com'\n", "must not carry credentials"),
        ("concurrency = \n", "is not valid TOML"),
    ],
)
def test_invalid_file_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    """Each bad value is rejected with the setting's name and what to do."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {}, {})
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)


def test_invalid_env_value_names_the_variable() -> None:
    """A bad environment value names the variable it came from."""
    with pytest.raises(
        ConfigError,
        match=r"'concurrency' \(from TRADE_INGEST_CONCURRENCY\): expected int, got 'lots'",
    ):
        load_settings(None, {"TRADE_INGEST_CONCURRENCY": "lots"}, {})


def test_missing_config_file(tmp_path: Path) -> None:
    """A missing config file is a configuration error, not a traceback."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", {}, {})


def test_loopback_http_allowed_and_insecure_opt_in() -> None:
    """Plain http is fine on loopback, and elsewhere only when allowed explicitly."""
    assert load_settings(None, {}, {"base_url": "http://127.0.0.1:8080"}).base_url
    assert load_settings(None, {}, {"base_url": "http://localhost:1"}).base_url
    env = {"TRADE_INGEST_ALLOW_INSECURE_HTTP": "true"}
    assert load_settings(None, env, {"base_url": "http://10.0.0.5"}).allow_insecure_http


def test_redact_url() -> None:
    """Credentials and query values never reach the audit log."""
    assert redact_url("https://u:secret@h.example/x?token=abc") == "https://h.example/x?token=***"


def test_token_from_env_or_file(tmp_path: Path) -> None:
    """The token comes from the named variable, or from a private file."""
    assert load_token(Settings(), {"TRADE_INGEST_TOKEN": " abc \n"}) == "abc"
    assert load_token(Settings(token_env="GW_TOKEN"), {"GW_TOKEN": "xyz"}) == "xyz"
    assert load_token(Settings(), {}) is None
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t\n")
    os.chmod(token_file, 0o600)
    assert load_token(Settings(token_file=str(token_file)), {}) == "s3cr3t"


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A token file others can read is refused, and the token is not echoed."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t\n")
    os.chmod(token_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_token(Settings(token_file=str(token_file)), {})
    assert "s3cr3t" not in str(caught.value)


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's loop on request; auto falls back when uvloop is missing; uvloop insists."""
    import sys

    from trade_ingest.pipeline import loop_factory

    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")
    with pytest.raises(ConfigError, match="event_loop"):
        load_settings(None, {"TRADE_INGEST_EVENT_LOOP": "trio"}, {})
    with pytest.raises(ConfigError, match="http_transport"):
        load_settings(None, {"TRADE_INGEST_HTTP_TRANSPORT": "curl"}, {})
