"""The server's broker credentials: configured, from the URL, or broker-config's password."""

from __future__ import annotations

from pathlib import Path

from server.config import ServerSettings
from server.mqtt import credentials, parse_broker_url


def _settings(tmp_path: Path, url: str, **values: object) -> ServerSettings:
    return ServerSettings(
        broker_url=url, state_dir=tmp_path, broker_cert=tmp_path / "cert.pem", **values
    )


def test_the_password_broker_config_made_is_used_as_fieldlink_server(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "broker-server-password").write_text("s3cret\n")
    settings = _settings(tmp_path, "mqtts://broker:8884")
    assert credentials(settings, parse_broker_url(settings.broker_url)) == (
        "fieldlink_server",
        "s3cret",
    )


def test_configured_credentials_win(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "broker-server-password").write_text("s3cret")
    settings = _settings(
        tmp_path, "mqtts://broker:8884", broker_username="me", broker_password="mine"
    )
    assert credentials(settings, parse_broker_url(settings.broker_url)) == ("me", "mine")
    from_url = _settings(tmp_path, "mqtts://u:p@broker:8884")
    assert credentials(from_url, parse_broker_url(from_url.broker_url)) == ("u", "p")


def test_no_password_file_and_no_tls_mean_no_credentials(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "mqtts://broker:8884")
    assert credentials(settings, parse_broker_url(settings.broker_url)) == (None, None)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "broker-server-password").write_text("s3cret")
    plain = _settings(tmp_path, "mqtt://broker:1883")
    assert credentials(plain, parse_broker_url(plain.broker_url)) == (None, None)
