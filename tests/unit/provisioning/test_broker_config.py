"""The generated Mosquitto configuration and the provisioning commands."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioning.broker import (
    PASSWORD_HASH_ITERATIONS,
    BrokerTargets,
    ingest_group,
    publish_revocations,
    render_acl,
    render_password_file,
    server_broker_password,
    server_password_path,
    write_broker_config,
)
from provisioning.ca import CertificateAuthority
from shared.cli import app
from shared.errors import ConfigError, UnavailableError
from tests.fixtures.pki import make_csr


def test_acl_confines_devices_and_gives_the_server_the_tree() -> None:
    acl = render_acl()
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "user fieldlink_server",
        "topic readwrite fieldlink/v1/#",
        "pattern write fieldlink/v1/%u/telemetry",
        "pattern write fieldlink/v1/%u/state",
        "pattern write fieldlink/v1/%u/events",
        "pattern write fieldlink/v1/%u/cmd/result",
        "pattern read fieldlink/v1/%u/cmd",
        "pattern write fieldlink/v1/%u/via/+/telemetry",
        "pattern write fieldlink/v1/%u/via/+/state",
        "pattern write fieldlink/v1/%u/via/+/events",
        "pattern read fieldlink/v1/_server/state",
    ]


def test_acl_denies_revoked_devices_everything() -> None:
    acl = render_acl(["mfp-0002", "mfp-0001"])
    assert "user mfp-0001\ntopic deny fieldlink/v1/#\n" in acl
    assert "user mfp-0002\ntopic deny fieldlink/v1/#\n" in acl


def test_written_config_sets_tls_identity_and_queue_limits(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    written = write_broker_config(ca, tmp_path / "broker", port=18883)
    conf = written.conf.read_text()
    for line in (
        "listener 18883",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"cafile {written.directory / 'ca.pem'}",
        f"certfile {written.directory / 'broker.pem'}",
        f"keyfile {written.directory / 'broker.key'}",
        f"crlfile {written.directory / 'crl.pem'}",
        f"acl_file {written.acl}",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
    ):
        assert line in conf.splitlines(), line
    assert stat.S_IMODE((written.directory / "broker.key").stat().st_mode) == 0o600
    assert (written.directory / "crl.pem").read_bytes() == ca.paths.crl.read_bytes()
    assert BrokerTargets.load(ca.paths.broker_targets).dirs == [str(written.directory)]


def test_publish_revocations_updates_every_broker_folder(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    first = write_broker_config(ca, tmp_path / "one")
    second = write_broker_config(ca, tmp_path / "two")
    ca.sign_device_csr(make_csr()[0], "mfp-gone")
    ca.revoke_device("mfp-gone")
    # The generated config names a pid file; no broker has written it here.
    with pytest.raises(UnavailableError, match="cannot read the broker's pid"):
        publish_revocations(ca)
    for written in (first, second):
        assert written.crl.read_bytes() == ca.paths.crl.read_bytes()
        assert "user mfp-gone\ntopic deny" in written.acl.read_text()


@pytest.fixture
def server_toml(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    return path


def test_cli_ca_init_show_and_broker_config(server_toml: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["ca", "init", "--config", str(server_toml)])
    assert result.exit_code == 0, result.output
    assert "created ec-p256 CA" in result.output

    again = runner.invoke(app, ["ca", "init", "--config", str(server_toml)])
    assert again.exit_code != 0
    assert again.output.strip().splitlines() == [
        f"error: a CA already exists in {tmp_path / 'state' / 'pki'} (use --force to replace it)"
    ]

    shown = runner.invoke(app, ["ca", "show", "--config", str(server_toml)])
    assert shown.exit_code == 0, shown.output
    assert "0 device certificate(s)" in shown.output

    out = tmp_path / "broker"
    written = runner.invoke(app, ["broker-config", "--out", str(out), "--config", str(server_toml)])
    assert written.exit_code == 0, written.output
    assert (out / "mosquitto.conf").exists()
    assert (out / "acl").exists()


def test_cli_errors_are_one_line(server_toml: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["ca", "show", "--config", str(server_toml)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: no CA in {tmp_path / 'state' / 'pki'}: run `fieldlink ca init` first"
    )
    bad = runner.invoke(app, ["ca", "init", "--key-type", "dsa", "--config", str(server_toml)])
    assert bad.exit_code == 2  # a wrong value given: shared.exit_codes.USAGE
    assert bad.output.strip() == "error: unknown key type 'dsa': use one of ec-p256, rsa-2048"
    assert "Traceback" not in bad.output
    assert os.environ.get("FIELDLINK_CONFIG") is None


def _listener_blocks(conf: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in conf.splitlines():
        if line.startswith("listener "):
            current = blocks.setdefault(line.split()[1], [])
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return blocks


def test_devices_client_id_is_their_cn_and_the_server_has_a_listener_with_a_password(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    written = write_broker_config(ca, tmp_path / "broker", port=18883, server_port=18884)
    conf = written.conf.read_text()
    assert "per_listener_settings true" in conf.splitlines()
    blocks = _listener_blocks(conf)
    devices, server = blocks["18883"], blocks["18884"]
    for line in ("use_identity_as_username true", "use_username_as_clientid true"):
        assert line in devices, line
        assert line not in server, line
    for block in (devices, server):
        assert "require_certificate true" in block
        assert "allow_anonymous false" in block
        assert f"acl_file {written.acl}" in block
    assert f"password_file {written.directory / 'passwd'}" in server
    assert written.server_port == 18884
    passwd = written.directory / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    assert stat.S_IMODE(server_password_path(ca).stat().st_mode) == 0o600
    # The same password on every run and in every broker folder.
    again = write_broker_config(ca, tmp_path / "again", port=18883)
    assert server_broker_password(ca) == server_password_path(ca).read_text()
    assert (again.directory / "passwd").read_text().split("$")[0] == "fieldlink_server:"


def test_password_file_is_mosquittos_pbkdf2_format() -> None:
    salt = bytes(range(12))
    line = render_password_file("s3cret", salt=salt)
    user, rest = line.strip().split(":", 1)
    _empty, kind, rounds, salt_b64, hash_b64 = rest.split("$")
    assert (user, kind, int(rounds)) == ("fieldlink_server", "7", PASSWORD_HASH_ITERATIONS)
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, PASSWORD_HASH_ITERATIONS, 64)
    assert base64.b64decode(hash_b64) == expected


def test_the_two_listeners_need_two_ports(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    with pytest.raises(ConfigError):
        write_broker_config(ca, tmp_path / "broker", port=18883, server_port=18883)


def test_the_ingest_group_is_secret_and_stable(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    group = ingest_group(ca)
    assert group.startswith("fieldlink-ingest-")
    assert group != "fieldlink-ingest"
    assert ingest_group(CertificateAuthority.load(tmp_path / "state")) == group
