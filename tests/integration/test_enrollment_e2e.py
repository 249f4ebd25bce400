"""Enrollment end to end: CA, generated broker config, a device enrolled with its one-time
token, reporting over mutual TLS, then revoked and refused.

Real parts throughout: `fieldlink ca init`, `fieldlink broker-config`, Mosquitto with that
configuration, `fieldlink server run`, `fieldlink agent enroll`, `fieldlink agent run`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import mosquitto_binary
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.integration


class TlsBroker:
    """Mosquitto started with the configuration `fieldlink broker-config` wrote."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.pid_file = directory / "mosquitto.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.directory / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.directory / "mosquitto.conf")],
                stdout=log,
                stderr=log,
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def center(tmp_path: Path, database_url: str) -> Iterator[tuple[ServerProcess, TlsBroker]]:
    port = free_port()
    pki = tmp_path / "state" / "pki"
    server = ServerProcess(
        tmp_path,
        database_url,
        f"mqtts://127.0.0.1:{port}",
        broker_ca=str(pki / "ca.pem"),
        broker_cert=str(pki / "server-client.pem"),
        broker_key=str(pki / "server-client.key"),
    )
    done = server.cli("ca", "init")
    assert done.returncode == 0, done.stderr
    # Mosquitto drops root for its own user, which cannot enter pytest's 0700 tmp_path.
    broker_dir = Path(tempfile.mkdtemp(prefix="fieldlink-broker-"))
    broker_dir.chmod(0o755)
    done = server.cli(
        "broker-config", "--out", str(broker_dir), "--port", str(port), "--bind", "127.0.0.1",
        "--pid-file", str(broker_dir / "mosquitto.pid"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    broker = TlsBroker(broker_dir, port)
    broker.start()
    try:
        with server:
            yield server, broker
    finally:
        broker.stop()
        shutil.rmtree(broker_dir, ignore_errors=True)


def _enroll(server: ServerProcess, token: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    return subprocess.run(
        [sys.executable, "-m", "shared", "agent", "enroll",
         "--server", server.url, "--token", token, "--dir", str(directory)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


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

    enrolled = _enroll(server, token, device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    config = device_dir / "agent.toml"
    assert config.exists()
    key_files = [p for p in device_dir.iterdir() if p.suffix == ".key" or p.name.endswith("_key")]
    assert key_files
    assert all(p.stat().st_mode & 0o077 == 0 for p in key_files)

    again = _enroll(server, token, tmp_path / "device2")
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
    unknown = _enroll(server, "flk_not-a-token", tmp_path / "d1")
    assert unknown.returncode != 0
    assert "unknown enrollment token" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
