"""Enrollment end to end: CA, generated broker config, a device enrolled with its one-time
token, reporting over mutual TLS, then revoked and refused.

Real parts throughout: `fieldlink ca init`, `fieldlink broker-config`, Mosquitto with that
configuration, `fieldlink server run`, `fieldlink agent enroll`, `fieldlink agent run`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.center import TlsBroker, enroll_agent, secure_center
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def center(tmp_path: Path, database_url: str) -> Iterator[tuple[ServerProcess, TlsBroker]]:
    with secure_center(tmp_path, database_url) as running:
        yield running


def test_an_enrolled_agent_reports_over_mutual_tls_then_revocation_shuts_it_out(
    tmp_path: Path, center: tuple[ServerProcess, TlsBroker]
) -> None:
    server, _broker = center
    registered = server.api(
        "POST", "/devices",
        json={"serial": "XK-7", "model": "MP 6055", "type": "mfp", "customer": "Acme"},
    )  # fmt: skip
    device_id, token = registered["device"]["id"], registered["enrollment_token"]
    device_dir = tmp_path / "device"

    enrolled = enroll_agent(server, token, device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    config = device_dir / "agent.toml"
    assert config.exists()
    key_files = [p for p in device_dir.iterdir() if p.suffix == ".key" or p.name.endswith("_key")]
    assert key_files
    assert all(p.stat().st_mode & 0o077 == 0 for p in key_files)

    again = enroll_agent(server, token, tmp_path / "device2")
    assert again.returncode != 0
    assert "already used" in again.stderr
    assert token not in again.stderr

    detail = server.device(device_id)
    assert detail["enrolled_at"] is not None

    # Samples every second over mutual TLS, with the enrolled identity.
    agent = AgentProcess(tmp_path, device_id, "unused")
    agent.config = config
    agent._spawn(
        [sys.executable, "-m", "shared", "agent", "run", "--config", str(config)],
        FIELDLINK_INTERVAL_S="1", FIELDLINK_STATE_DIR=str(tmp_path / "agent-state"),
        FIELDLINK_PROFILE="mfp", FIELDLINK_SIMULATE="true", FIELDLINK_KEEPALIVE_S="2",
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                server.device(device_id)["online"]
                and server.device(device_id)["telemetry_stats"]["received"] >= 2
            ),
            timeout=20,
        )
        revoked = server.api("POST", f"/devices/{device_id}/revoke")
        assert revoked["revoked_at"] is not None
        assert revoked["online"] is False
        time.sleep(2)
        before = server.device(device_id)["telemetry_stats"]["received"]
        time.sleep(3)
        after = server.device(device_id)
        assert after["telemetry_stats"]["received"] == before  # nothing more gets through
        assert after["online"] is False
    finally:
        agent.stop()


def test_enrollment_refusals(center: tuple[ServerProcess, TlsBroker], tmp_path: Path) -> None:
    server, _ = center
    unknown = enroll_agent(server, "flk_not-a-token", tmp_path / "d1")
    assert unknown.returncode != 0
    assert "unknown enrollment token" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
