"""Simulated devices that accept sessions: host keys per device, default policy, options."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncssh
import pytest

from agent.remote.policy import ServiceTarget
from agent.simulate import (
    SessionOptions,
    build_fleet,
    ensure_host_keys,
    fleet_ids,
    parse_services,
)
from shared.errors import ConfigError
from shared.signing import generate_command_key, public_key_pem


def test_host_keys_are_made_once_per_device(tmp_path: Path) -> None:
    ids = fleet_ids("sim", 3)
    directory = tmp_path / "host-keys"
    assert ensure_host_keys(directory, ids) == 3
    for device_id in ids:
        private = directory / device_id
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        key = asyncssh.read_private_key(private)
        public = asyncssh.import_public_key((directory / f"{device_id}.pub").read_text())
        assert key.public_data == public.public_data
        assert key.algorithm == b"ssh-ed25519"
    before = (directory / ids[0]).read_bytes()
    (directory / f"{ids[2]}.pub").unlink()
    assert ensure_host_keys(directory, ids) == 1  # only the incomplete one again
    assert (directory / ids[0]).read_bytes() == before


def test_services_are_name_equals_host_port() -> None:
    assert parse_services(["web=127.0.0.1:80", " vnc = [::1]:5900 "]) == {
        "web": ServiceTarget("web", "127.0.0.1", 80),
        "vnc": ServiceTarget("vnc", "::1", 5900),
    }
    for bad in ("web", "web=localhost", "we b=127.0.0.1:80"):
        with pytest.raises(ConfigError, match="--service"):
            parse_services([bad])


def test_simulated_devices_get_the_default_policy_and_their_own_host_key(tmp_path: Path) -> None:
    key_file = tmp_path / "command.pub"
    key_file.write_bytes(public_key_pem(generate_command_key()))
    options = SessionOptions(
        command_key_file=key_file,
        host_key_dir=tmp_path / "keys",
        state_dir=tmp_path / "state",
        services={"web": ServiceTarget("web", "127.0.0.1", 8080)},
    )
    agents = build_fleet("mqtt://127.0.0.1:1883", fleet_ids("sim", 2), sessions=options)
    for agent in agents:
        sessions = agent.sessions
        assert sessions is not None
        assert sessions.policy.consent == "none"
        assert sessions.policy.is_allowed("web")
        folder = tmp_path / "state" / agent.device_id / "files"
        assert sessions.policy.sftp_folders == {"files": folder}
        assert sessions.host_key_path == tmp_path / "keys" / agent.device_id
        assert agent.control_socket is None  # no local panel for simulated devices
        assert {"session.open", "session.close"} <= set(agent.commands.registry.types())
        assert agent.commands.key_file == key_file
    # Without session options, simulated devices refuse commands as before.
    [plain] = build_fleet("mqtt://127.0.0.1:1883", ["sim-plain"])
    assert plain.sessions is None
    assert plain.commands.key_file is None
