"""Certificate renewal end to end: an enrolled agent renews its own certificate, reconnects
over mutual TLS with the new pair without restarting, and is refused once revoked.

Real parts throughout, as in the enrollment test: `fieldlink ca init`, `fieldlink
broker-config`, Mosquitto with that configuration, `fieldlink server run`, `fieldlink agent
enroll`, `fieldlink agent run`. ``renew_before_days`` larger than the 397-day validity makes
renewal due at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.fixtures.center import enroll_agent, secure_center
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def center(tmp_path: Path) -> Iterator[ServerProcess]:
    with secure_center(tmp_path, f"sqlite:///{tmp_path / 'fieldlink.db'}") as (server, _broker):
        yield server


def _serial(cert_file: Path) -> str:
    return format(x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number, "x")


def _renewals(server: ServerProcess, device_id: str) -> list[dict[str, Any]]:
    page = server.api(
        "GET", "/audit", params={"action": "device.renew", "target": f"device:{device_id}"}
    )
    items: list[dict[str, Any]] = page["items"]
    return items


def _run_agent(tmp_path: Path, device_id: str, config: Path) -> AgentProcess:
    agent = AgentProcess(tmp_path, device_id, "unused")
    agent.config = config
    agent._spawn(
        [sys.executable, "-m", "shared", "agent", "run", "--config", str(config)],
        FIELDLINK_INTERVAL_S="0.5", FIELDLINK_STATE_DIR=str(tmp_path / "agent-state"),
        FIELDLINK_PROFILE="mfp", FIELDLINK_SIMULATE="true", FIELDLINK_KEEPALIVE_S="2",
        FIELDLINK_RECONNECT_MIN_S="0.2", FIELDLINK_RECONNECT_MAX_S="1",
        FIELDLINK_RENEW_BEFORE_DAYS="400", FIELDLINK_RENEW_CHECK_INTERVAL_S="3600",
    )  # fmt: skip
    return agent


def test_the_agent_renews_its_certificate_and_reports_with_it_until_revoked(
    tmp_path: Path, center: ServerProcess
) -> None:
    server = center
    registered = server.api(
        "POST", "/devices",
        json={"serial": "RN-7", "model": "MP 6055", "type": "mfp", "customer": "Acme"},
    )  # fmt: skip
    device_id, token = registered["device"]["id"], registered["enrollment_token"]
    device_dir = tmp_path / "device"
    enrolled = enroll_agent(server, token, device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    cert_file, key_file = device_dir / "device.pem", device_dir / "device.key"
    enrolled_serial = _serial(cert_file)
    enrolled_key = key_file.read_bytes()

    agent = _run_agent(tmp_path, device_id, device_dir / "agent.toml")
    try:
        # Renewal is due at once: the server records a new certificate for the device...
        wait_until(lambda: _renewals(server, device_id), timeout=30)
        renewed_serial = _renewals(server, device_id)[0]["details"]["certificate_serial"]
        assert renewed_serial != enrolled_serial
        # ...and the agent, once connected with it, drops the previous pair.
        wait_until(lambda: "previous pair deleted" in agent.log(), timeout=30)
        assert _serial(cert_file) == renewed_serial
        assert key_file.read_bytes() != enrolled_key
        assert key_file.stat().st_mode & 0o077 == 0
        assert not list(device_dir.glob("*.prev"))
        assert agent.process is not None
        assert agent.process.poll() is None  # no restart: the same process

        # Telemetry keeps arriving over mutual TLS with the new pair, nothing lost.
        received = server.device(device_id)["telemetry_stats"]["received"]
        wait_until(
            lambda: server.device(device_id)["telemetry_stats"]["received"] >= received + 4,
            timeout=20,
        )
        detail = server.device(device_id)
        assert detail["online"] is True
        assert detail["telemetry_stats"]["missing"] == 0
        assert detail["telemetry_stats"]["rejected"] == 0
        assert len(_renewals(server, device_id)) == 1  # checked again only in an hour
    finally:
        agent.stop()

    # Revoked, the device cannot renew: refused (403), logged, and its pair kept.
    revoked = server.api("POST", f"/devices/{device_id}/revoke")
    assert revoked["revoked_at"] is not None
    kept = (key_file.read_bytes(), cert_file.read_bytes())
    agent = _run_agent(tmp_path, device_id, device_dir / "agent.toml")
    try:
        wait_until(lambda: "refused by the server (HTTP 403)" in agent.log(), timeout=30)
        line = next(
            line for line in agent.log().splitlines() if "refused by the server (HTTP 403)" in line
        )
        assert "revoked" in line
        assert "keeping the current certificate" in line
        assert "PRIVATE KEY" not in agent.log()
        time.sleep(0.5)
        assert agent.process is not None
        assert agent.process.poll() is None  # a refusal does not take the agent down
        assert (key_file.read_bytes(), cert_file.read_bytes()) == kept
        assert len(_renewals(server, device_id)) == 1
    finally:
        agent.stop()
