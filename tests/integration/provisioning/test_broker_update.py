"""The broker update: queued, applied or retried, and the reload helper's guard rails.

The part of tests/unit/provisioning/test_broker_update.py that leaves the test's process
(it runs real reload commands and signals a real process); the in-process rest stays there.
"""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from provisioning.broker import BrokerTargets, write_broker_config
from provisioning.broker_update import (
    REQUEST_FILE,
    apply_broker_update,
    load_update_state,
    request_broker_update,
    update_broker,
)
from provisioning.ca import CertificateAuthority
from shared.cli import app
from shared.ids import utcnow
from tests.fixtures.pki import revoked, set_reload


def test_a_failed_reload_stays_pending_with_its_error_then_a_retry_applies_it(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    written = write_broker_config(ca, tmp_path / "broker")
    set_reload(ca, "false")
    revoked(ca, "mfp-gone")
    start = utcnow().replace(microsecond=0)  # stored to the millisecond

    state = update_broker(ca.paths, device_id="mfp-gone", now=start)
    assert state.state == "pending"
    assert state.pending_since == start
    assert state.revocation_pending("mfp-gone")
    assert state.attempts == 1
    assert state.last_error is not None
    assert "reload command failed (false): exit 1" in state.last_error
    public = state.public()
    assert public["state"] == "pending"
    assert public["last_error"] == state.last_error

    # A second failure keeps the oldest "since" and counts the attempt.
    later = start + timedelta(seconds=30)
    again = apply_broker_update(ca.paths, now=later)
    assert (again.state, again.pending_since, again.attempts) == ("pending", start, 2)
    assert again.last_attempt_at == later

    marker = tmp_path / "reloaded"
    set_reload(ca, f"touch {marker}")
    done = apply_broker_update(ca.paths, now=later + timedelta(seconds=30))
    assert done.state == "applied"
    assert marker.exists()
    assert not done.revocation_pending("mfp-gone")
    assert (done.attempts, done.last_error, done.pending_since) == (0, None, None)
    assert "user mfp-gone\ntopic deny" in written.acl.read_text()
    assert written.crl.read_bytes() == ca.paths.crl.read_bytes()
    # What the server process reads later is the same.
    assert load_update_state(ca.paths).state == "applied"


def test_helper_mode_leaves_the_broker_folder_to_the_helper(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nstate_dir = "{state_dir}"\n')
    ca = CertificateAuthority.init(state_dir)
    written = write_broker_config(ca, tmp_path / "broker", reload_by="helper")
    revoked(ca, "mfp-helped")

    state = update_broker(ca.paths, device_id="mfp-helped")
    assert (state.state, state.reload_by, state.attempts) == ("pending", "helper", 0)
    assert "mfp-helped" not in written.acl.read_text()  # the server did not write it
    assert (ca.paths.root / REQUEST_FILE).read_text() == f"{state.generation}\n"

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        result = CliRunner().invoke(
            app,
            ["broker-reload", "--config", str(config), "--dir", str(written.directory),
             "--pid-file", str(pid_file)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert sleeper.wait(timeout=5) == -1  # SIGHUP reached the "broker"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert "mfp-helped" in written.acl.read_text()
    assert load_update_state(ca.paths).state == "applied"

    # The broker is gone: the helper fails in one line, and the update is pending again.
    request_broker_update(ca.paths)
    failed = CliRunner().invoke(
        app,
        ["broker-reload", "--config", str(config), "--dir", str(written.directory),
         "--pid-file", str(pid_file)],
    )  # fmt: skip
    assert failed.exit_code != 0
    assert failed.output.strip() == f"error: the broker (pid {sleeper.pid}) is not running"
    assert (
        load_update_state(ca.paths).last_error == f"the broker (pid {sleeper.pid}) is not running"
    )


def test_the_helper_ignores_targets_the_server_could_rewrite(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nstate_dir = "{state_dir}"\n')
    ca = CertificateAuthority.init(state_dir)
    written = write_broker_config(ca, tmp_path / "broker", reload_by="helper")
    pwned = tmp_path / "pwned"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    BrokerTargets(dirs=[str(elsewhere)], reload_command=f"touch {pwned}").save(
        ca.paths.broker_targets
    )
    marker = tmp_path / "reloaded"
    result = CliRunner().invoke(
        app,
        ["broker-reload", "--config", str(config), "--dir", str(written.directory),
         "--reload-command", f"touch {marker}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert marker.exists()
    assert not pwned.exists()
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() == 0:
        bare = CliRunner().invoke(app, ["broker-reload", "--config", str(config)])
        assert bare.exit_code != 0
        assert "give --dir" in bare.output
