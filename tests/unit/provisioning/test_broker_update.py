"""The broker update: queued, applied or retried, and the reload helper's guard rails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioning.broker import BrokerTargets, render_mosquitto_conf, write_broker_config
from provisioning.broker_update import (
    REQUEST_FILE,
    STATE_FILE,
    apply_broker_update,
    load_update_state,
    request_broker_update,
    update_broker,
)
from provisioning.ca import CertificateAuthority
from provisioning.pki import read_revoked_device_ids
from shared.cli import app
from tests.fixtures.pki import revoked, set_reload


def test_generated_config_sets_a_pid_file_the_broker_user_can_write(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    written = write_broker_config(ca, tmp_path / "broker")
    assert written.pid_file == written.directory / "run" / "mosquitto.pid"
    assert f"pid_file {written.pid_file}" in written.conf.read_text().splitlines()
    assert written.pid_file.parent.is_dir()
    assert BrokerTargets.load(ca.paths.broker_targets).pid_file == str(written.pid_file)
    chosen = render_mosquitto_conf(tmp_path, pid_file=Path("/run/mosquitto/mosquitto.pid"))
    assert "pid_file /run/mosquitto/mosquitto.pid" in chosen.splitlines()


def test_without_a_pid_the_update_is_pending_not_lost(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    write_broker_config(ca, tmp_path / "broker")  # pid_file set, but no broker wrote it yet
    revoked(ca, "mfp-early")
    state = update_broker(ca.paths, device_id="mfp-early")
    assert state.state == "pending"
    assert state.last_error is not None
    assert "cannot read the broker's pid" in state.last_error


def test_no_broker_folder_means_unmanaged_not_pending(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    revoked(ca, "mfp-alone")
    state = update_broker(ca.paths, device_id="mfp-alone")
    assert state.state == "unmanaged"
    assert not state.revocation_pending("mfp-alone")


def test_a_request_during_an_apply_stays_pending(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    write_broker_config(ca, tmp_path / "broker")
    set_reload(ca, "true")
    first = request_broker_update(ca.paths, device_id="mfp-a")
    # Applied up to generation 1 only, as if mfp-b's request came in mid-apply.
    state_path = ca.paths.root / STATE_FILE
    request_broker_update(ca.paths, device_id="mfp-b")
    data = json.loads(state_path.read_text())
    data["applied_generation"] = first.generation
    data["revocations"].pop("mfp-a")
    state_path.write_text(json.dumps(data))
    state = load_update_state(ca.paths)
    assert state.pending
    assert state.revocations == {"mfp-b": 2}
    assert (ca.paths.root / REQUEST_FILE).read_text() == "2\n"


def test_a_damaged_state_file_starts_over_pending(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    write_broker_config(ca, tmp_path / "broker")
    (ca.paths.root / STATE_FILE).write_text("{not json")
    assert load_update_state(ca.paths).state == "pending"


def test_the_helper_copies_nothing_a_symlink_points_at(tmp_path: Path) -> None:
    """A server that turned hostile cannot make the root helper publish another file."""
    ca = CertificateAuthority.init(tmp_path / "state")
    written = write_broker_config(ca, tmp_path / "broker", reload_by="helper")
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    before = written.crl.read_bytes()
    ca.paths.crl.unlink()
    ca.paths.crl.symlink_to(secret)
    targets = BrokerTargets(dirs=[str(written.directory)], reload_command="true")
    state = apply_broker_update(ca.paths, targets=targets)
    assert state.last_error is not None
    assert written.crl.read_bytes() == before
    assert b"secret-hash" not in b"".join(p.read_bytes() for p in written.directory.glob("*.*"))

    # A file that is not what its name says is refused too (no symlink needed).
    ca.paths.crl.unlink()
    ca.paths.crl.write_bytes(secret.read_bytes())
    state = apply_broker_update(ca.paths, targets=targets)
    assert state.last_error is not None
    assert "not valid PEM" in state.last_error
    assert written.crl.read_bytes() == before


def test_acl_lines_come_only_from_device_ids(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    revoked(ca, "mfp-real")
    data = json.loads(ca.paths.revoked.read_text())
    data["revoked"]["abc"] = {
        "revoked_at": "2026-01-01T00:00:00Z",
        "device_id": "x\ntopic readwrite #",
        "reason": "unspecified",
    }
    ca.paths.revoked.write_text(json.dumps(data))
    assert read_revoked_device_ids(ca.paths) == ["mfp-real"]


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only: the helper's chown of its state")
def test_root_leaves_the_state_to_the_folder_owner(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    write_broker_config(ca, tmp_path / "broker")
    os.chown(ca.paths.root, 4242, 4242)
    # An administrator (root) revokes and reconfigures: the server's user keeps its files.
    revoked(ca, "mfp-root")
    write_broker_config(ca, tmp_path / "broker")
    request_broker_update(ca.paths)
    for name in (STATE_FILE, REQUEST_FILE, "revoked.json", "crl.pem", "broker-targets.json"):
        assert (ca.paths.root / name).stat().st_uid == 4242, name
    # A symlink planted where the lock goes is not followed (no chown of its target).
    victim = tmp_path / "victim"
    victim.write_text("x")
    lock = ca.paths.root / ".broker-update.lock"
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        load_update_state(ca.paths)
    assert victim.stat().st_uid == 0


def test_cli_shows_the_broker_state_and_refuses_a_bad_reload_by(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    runner = CliRunner()
    assert runner.invoke(app, ["ca", "init", "--config", str(config)]).exit_code == 0
    bad = runner.invoke(
        app,
        ["broker-config", "--out", str(tmp_path / "b"), "--reload-by", "cron",
         "--config", str(config)],
    )  # fmt: skip
    assert bad.exit_code != 0
    assert bad.output.strip() == "error: reload_by must be server or helper, not 'cron'"
    shown = runner.invoke(app, ["ca", "show", "--config", str(config)])
    assert "broker:        unmanaged (reload by server)" in shown.output
    done = runner.invoke(
        app, ["broker-config", "--out", str(tmp_path / "b"), "--config", str(config)]
    )
    assert done.exit_code == 0, done.output
    request_broker_update(CertificateAuthority.load(tmp_path / "state").paths)
    shown = runner.invoke(app, ["ca", "show", "--config", str(config)])
    assert "broker:        pending since " in shown.output
