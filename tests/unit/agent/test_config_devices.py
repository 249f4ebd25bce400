"""``[[agent.devices]]``: the equipment a site gateway watches, checked when loaded.

Errors name the table and the key in one line and never echo a value (communities
and SNMPv3 keys are secrets); the settings' ``repr`` leaves the tables out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import load_agent_settings
from agent.config_devices import watched_devices
from shared.errors import ConfigError

GOOD = """
[agent]
device_id = "server-site-gw"

[[agent.devices]]
id = "mfp-3f-east"
profile = "mfp"
host = "192.0.2.10"
snmp_version = "2c"
snmp_community = "s3cret-community"

[[agent.devices]]
id = "mfp-3f-west"
host = "192.0.2.11"
port = 1161
snmp_version = "3"
snmp_user = "fieldlink"
snmp_auth_protocol = "sha512"
snmp_auth_key = "auth-passphrase-1"
snmp_priv_protocol = "aes256"
snmp_priv_key = "priv-passphrase-1"
expected_serial = "XK-0042"
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body)
    return path


def test_watched_devices_are_read_with_their_snmp_targets(tmp_path: Path) -> None:
    settings = load_agent_settings(_write(tmp_path, GOOD), environ={})
    devices = watched_devices(settings.devices)
    assert [(d.id, d.profile) for d in devices] == [("mfp-3f-east", "mfp"), ("mfp-3f-west", "mfp")]
    east, west = devices
    assert (east.target.host, east.target.port, east.target.version) == ("192.0.2.10", 161, "2c")
    assert (west.target.port, west.target.version, west.target.auth_protocol) == (
        1161,
        "3",
        "sha512",
    )
    assert west.target.priv_protocol == "aes256"
    assert west.target.expected_serial == "XK-0042"
    # Secrets never reach a repr (and so no log line that prints settings or devices).
    for text in (repr(settings), repr(devices)):
        for secret in ("s3cret-community", "auth-passphrase-1", "priv-passphrase-1"):
            assert secret not in text


def test_no_devices_by_default(tmp_path: Path) -> None:
    settings = load_agent_settings(_write(tmp_path, '[agent]\ndevice_id = "mfp-1"\n'), environ={})
    assert settings.devices == ()


def test_devices_from_the_environment() -> None:
    tables = [{"id": "mfp-a", "host": "192.0.2.1", "snmp_community": "public"}]
    settings = load_agent_settings(
        environ={"FIELDLINK_DEVICE_ID": "server-gw", "FIELDLINK_DEVICES": json.dumps(tables)}
    )
    assert [d.id for d in watched_devices(settings.devices)] == ["mfp-a"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('host = "192.0.2.1"\nsnmp_community = "hunter2-x"', "#1 id: required"),
        ('id = "MFP_1"\nsnmp_community = "hunter2-x"', "#1 id: not a device id"),
        ('id = "mfp-1"\nprofile = "imaging"\nsnmp_community = "hunter2-x"', "#1 profile: must be"),
        ('id = "mfp-1"\nsnmp_comunity = "hunter2-x"', "snmp_comunity: unknown key"),
        ('id = "mfp-1"\nsnmp_version = "2c"', "snmp_community: required"),
        (
            'id = "mfp-1"\nsnmp_version = "3"\nsnmp_user = "u"\nsnmp_auth_key = "hunter2-x"\n'
            'snmp_priv_key = "hunter2-x"\nsnmp_auth_protocol = "md5"',
            "snmp_auth_protocol: must be one of",
        ),
        (
            'id = "mfp-1"\nsnmp_version = "3"\nsnmp_user = "u"\nsnmp_auth_key = "hunter2"\n'
            'snmp_priv_key = "hunter2-x"',
            "snmp_auth_key: at least 8",
        ),
        ('id = "server-gw"\nsnmp_community = "hunter2-x"', "own device_id cannot be watched"),
    ],
)
def test_bad_tables_give_one_line_naming_the_key_never_the_value(
    tmp_path: Path, table: str, message: str
) -> None:
    body = f'[agent]\ndevice_id = "server-gw"\n\n[[agent.devices]]\n{table}\n'
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(_write(tmp_path, body), environ={})
    text = str(caught.value)
    assert message in text, text
    assert "devices" in text
    assert "hunter2" not in text
    assert len(text.splitlines()) == 1


def test_a_device_listed_twice_is_refused(tmp_path: Path) -> None:
    one = '[[agent.devices]]\nid = "mfp-1"\nsnmp_community = "c"\n'
    body = f'[agent]\ndevice_id = "server-gw"\n{one}{one}'
    with pytest.raises(ConfigError, match="#2 id: mfp-1 is listed twice"):
        load_agent_settings(_write(tmp_path, body), environ={})
