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


def test_session_tables_make_the_site_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[agent]\ndevice_id = "mfp-0042"\ncert_file = "/etc/fl/device.pem"\n'
        'key_file = "/etc/fl/device.key"\n'
        '[agent.services]\nweb = "127.0.0.1:80"\nvnc = "127.0.0.1:5900"\n'
        '[agent.policy]\nservices = ["web"]\nconsent = "required"\napproval_timeout_s = 30\n'
        "max_sessions = 2\n"
        '[agent.policy.sftp_folders]\nlogs = "/var/log/printer"\n',
    )
    settings = load_agent_settings(path, environ={})
    policy = settings.site_policy
    assert policy.consent == "required"
    assert policy.approval_timeout_s == 30.0
    assert policy.max_sessions == 2
    assert policy.is_allowed("web")
    assert not policy.is_allowed("vnc")
    assert policy.sftp_folders == {"logs": Path("/var/log/printer")}
    # The host key enrollment wrote next to the certificate; the environment's proxy.
    assert settings.ssh_host_key_file == Path("/etc/fl/ssh_host_ed25519_key")
    assert (settings.tunnel_proxy, settings.proxy) == ("env", True)


def test_session_defaults_without_tables(tmp_path: Path) -> None:
    settings = load_agent_settings(write(tmp_path, '[agent]\ndevice_id = "mfp-0042"\n'), environ={})
    assert settings.site_policy.consent == "none"
    assert settings.site_policy.max_sessions == 4
    assert settings.site_policy.services == {}
    assert settings.ssh_host_key_file == tmp_path / "ssh_host_ed25519_key"
    alone = load_agent_settings(None, environ={"FIELDLINK_DEVICE_ID": "mfp-1"})
    assert alone.ssh_host_key_file == Path("/etc/fieldlink/ssh_host_ed25519_key")


@pytest.mark.parametrize(
    ("value", "proxy"),
    [("none", None), ("NONE", None), ("env", True), ("http://proxy:3128", "http://proxy:3128")],
)
def test_tunnel_proxy(tmp_path: Path, value: str, proxy: object) -> None:
    path = write(tmp_path, f'[agent]\ndevice_id = "mfp-0042"\ntunnel_proxy = "{value}"\n')
    assert load_agent_settings(path, environ={}).proxy == proxy


def test_session_keys_from_the_environment(tmp_path: Path) -> None:
    settings = load_agent_settings(
        write(tmp_path, '[agent]\ndevice_id = "mfp-0042"\n'),
        environ={
            "FIELDLINK_SERVICES": '{"web": "127.0.0.1:8080"}',
            "FIELDLINK_POLICY": '{"consent": "notify", "max_duration_s": 60}',
            "FIELDLINK_SSH_HOST_KEY_FILE": "/keys/host",
            "FIELDLINK_TUNNEL_PROXY": "none",
        },
    )
    assert settings.site_policy.services["web"].port == 8080
    assert settings.site_policy.consent == "notify"
    assert settings.site_policy.max_duration_s == 60.0
    assert settings.ssh_host_key_file == Path("/keys/host")
    assert settings.proxy is None


@pytest.mark.parametrize(
    ("body", "environ", "message"),
    [
        ('[agent.policy]\nconsent = "maybe"\n', {}, "[agent.policy] consent must be"),
        ("[agent.policy]\nmax_sessions = 0\n", {}, "[agent.policy] max_sessions"),
        ('[agent.policy]\nservices = ["ssh"]\n', {}, "unknown services ['ssh']"),
        ('[agent.services]\nweb = "nohost"\n', {}, "service 'web'"),
        ('tunnel_proxy = "ftp://x"\n', {}, "[agent] tunnel_proxy: must be env, none"),
        ("", {"FIELDLINK_POLICY": "{not json"}, "FIELDLINK_POLICY: must be a JSON object"),
        ("", {"FIELDLINK_SERVICES": "[1]"}, "FIELDLINK_SERVICES: must be a table"),
    ],
)
def test_bad_session_settings_give_one_clear_error(
    tmp_path: Path, body: str, environ: dict[str, str], message: str
) -> None:
    path = write(tmp_path, f'[agent]\ndevice_id = "mfp-0042"\n{body}')
    with pytest.raises(ConfigError) as error:
        load_agent_settings(path, environ=environ)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_replace_keeps_paths_and_session_tables(tmp_path: Path) -> None:
    from agent.config import replace

    path = write(
        tmp_path,
        '[agent]\ndevice_id = "mfp-0042"\nstate_dir = "/tmp/fl"\n'
        '[agent.policy]\nconsent = "notify"\n',
    )
    changed = replace(load_agent_settings(path, environ={}), interval_s=5)
    assert changed.interval_s == 5.0
    assert changed.state_dir == Path("/tmp/fl")
    assert changed.site_policy.consent == "notify"
    assert changed.ssh_host_key_file == tmp_path / "ssh_host_ed25519_key"
