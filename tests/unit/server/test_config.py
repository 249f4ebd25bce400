"""Configuration: TOML values under FIELDLINK_* environment overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ServerSettings, load_server_settings
from shared.errors import ConfigError


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\ndatabase_url = "sqlite:///from-file.db"\nhttp_port = 9000\n')
    monkeypatch.setenv("FIELDLINK_HTTP_PORT", "9100")
    settings = load_server_settings(config)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.http_port == 9100


def test_environment_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\nbroker_url = "mqtt://broker:1883"\n')
    monkeypatch.setenv("FIELDLINK_CONFIG", str(config))
    assert load_server_settings().broker_url == "mqtt://broker:1883"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nhttp_port = 'x'\n", "http_port"),
        ("[server]\nno_such_key = 1\n", "no_such_key"),
        ("[server\n", "invalid TOML"),
        ("server = 3\n", "must be a table"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_server_settings(config)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_server_settings(tmp_path / "nope.toml")


def test_defaults_without_a_file() -> None:
    assert ServerSettings().broker_url == "embedded"
