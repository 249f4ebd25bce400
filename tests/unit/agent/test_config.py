"""Agent settings: the [agent] section of agent.toml, FIELDLINK_* overrides, one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import DEFAULT_CONFIG_PATH, load_agent_settings, resolve_config_path
from shared.errors import ConfigError


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body)
    return path


def test_file_values_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[agent]\ndevice_id = "mfp-0042"\nbroker_url = "mqtts://broker.example:8883"\n'
        'interval_s = 10\nstate_dir = "/tmp/fl"\nprofile = "mfp"\nsimulate = true\n'
        'ca_file = "/etc/fieldlink/ca.pem"\ncert_file = "c.pem"\nkey_file = "k.pem"\n',
    )
    settings = load_agent_settings(path, environ={})
    assert settings.device_id == "mfp-0042"
    assert settings.interval_s == 10.0
    assert settings.state_dir == Path("/tmp/fl")
    assert (settings.broker.host, settings.broker.port, settings.broker.tls) == (
        "broker.example",
        8883,
        True,
    )
    assert settings.profile == "mfp"
    assert settings.simulate is True
    assert settings.ca_file == Path("/etc/fieldlink/ca.pem")
    assert settings.keepalive_s == 30
    assert settings.outbox_max_samples == 10_000
    assert settings.log_level == "info"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ndevice_id = "mfp-0042"\ninterval_s = 30\n')
    settings = load_agent_settings(
        path,
        environ={
            "FIELDLINK_INTERVAL_S": "2.5",
            "FIELDLINK_KEEPALIVE_S": "5",
            "FIELDLINK_SIMULATE": "yes",
            "FIELDLINK_BROKER_URL": "mqtt://10.0.0.1",
            "FIELDLINK_DATABASE_URL": "sqlite:///server-only.db",  # the server's: ignored
        },
    )
    assert settings.interval_s == 2.5
    assert settings.keepalive_s == 5
    assert settings.simulate is True
    assert (settings.broker.host, settings.broker.port) == ("10.0.0.1", 1883)


def test_environment_alone_is_enough() -> None:
    settings = load_agent_settings(None, environ={"FIELDLINK_DEVICE_ID": "srv-1"})
    assert settings.device_id == "srv-1"


@pytest.mark.parametrize(
    ("body", "environ", "message"),
    [
        ('device_id = "m-1"\ninterval = 5', {}, r"\[agent\] interval: unknown key"),
        ('device_id = "m-1"\ninterval_s = "often"', {}, r"\[agent\] interval_s: must be a number"),
        ('device_id = "m-1"\ninterval_s = 0', {}, r"interval_s: must be greater than 0"),
        ('device_id = "Bad Id"', {}, r"\[agent\] device_id: must be 1-63"),
        ("interval_s = 5", {}, r"device_id: required"),
        ('device_id = "m-1"\nbroker_url = "http://x"', {}, r"broker_url: must be an mqtt://"),
        ('device_id = "m-1"\nprofile = "toaster"', {}, r"profile: must be one of"),
        ('device_id = "m-1"\ncert_file = "c.pem"', {}, r"cert_file and key_file: set both"),
        ('device_id = "m-1"', {"FIELDLINK_KEEPALIVE_S": "soon"}, r"^FIELDLINK_KEEPALIVE_S: must"),
    ],
)
def test_bad_key_gives_one_clear_error(
    tmp_path: Path, body: str, environ: dict[str, str], message: str
) -> None:
    path = write(tmp_path, f"[agent]\n{body}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_agent_settings(path, environ=environ)
    assert "\n" not in str(caught.value)


def test_bad_value_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ndevice_id = "m-1"\nkeepalive_s = "hunter2"\n')
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(path, environ={})
    assert "hunter2" not in str(caught.value)


def test_missing_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_agent_settings(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_agent_settings(write(tmp_path, "[agent\n"), environ={})


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "a.toml"
    monkeypatch.setenv("FIELDLINK_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_config_path(explicit) == explicit
    assert resolve_config_path(None) == tmp_path / "env.toml"
    monkeypatch.delenv("FIELDLINK_CONFIG")
    expected = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    assert resolve_config_path(None) == expected


def test_resend_window_keys_defaults_and_validation(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ndevice_id = "mfp-0042"\n')
    settings = load_agent_settings(path, environ={})
    assert (settings.resend_window_s, settings.resend_max_samples) == (600.0, 2_000)
    settings = load_agent_settings(
        path, environ={"FIELDLINK_RESEND_WINDOW_S": "30", "FIELDLINK_RESEND_MAX_SAMPLES": "0"}
    )
    assert (settings.resend_window_s, settings.resend_max_samples) == (30.0, 0)
    for key, value, error in [
        ("resend_window_s", "0", "must be greater than 0"),
        ("resend_max_samples", "-1", "must be 0 or more"),
        ("resend_max_samples", "many", "must be an integer"),
    ]:
        with pytest.raises(ConfigError, match=f"FIELDLINK_{key.upper()}: {error}"):
            load_agent_settings(path, environ={f"FIELDLINK_{key.upper()}": value})
