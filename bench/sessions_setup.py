"""The scene of :mod:`bench.sessions`: a center, enrolled agents and the operator's access.

``fieldlink server run`` with a TLS Mosquitto (:func:`center`), real agents
(:func:`start_agent`) whose shells start in a home with Debian's default profile
(:func:`device_home`), the operator ``bench`` (:func:`add_operator`) and its
access through the public API (:class:`Bench`), the SSH gateway's port and options,
and the JSON log lines of both processes (:func:`log_times`). ``bench.agent_footprint``
sets up its agents with the same pieces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx

from bench._openssh import CIPHER
from tests.fixtures.center import TlsBroker, enroll_agent
from tests.fixtures.ports import free_port
from tests.fixtures.processes import AgentProcess, ServerProcess

PASSWORD = "bench-password-1"  # noqa: S105
OPERATOR = "bench"


def device_home(workdir: Path) -> Path:
    """A home folder with Debian's default profile, for every shell the bench opens.

    This machine's own ``/root/.bashrc`` runs ``pyenv init`` (about 300 ms per
    login shell), which no device has; with it the prompt would measure pyenv.
    """
    home = workdir / "home"
    if not home.exists():
        home.mkdir()
        for name in (".profile", ".bashrc", ".bash_logout"):
            skel = Path("/etc/skel") / name
            if skel.exists():
                shutil.copy(skel, home / name)
    return home


def login_shell_command(workdir: Path) -> list[str]:
    """The remote command of an OpenSSH login: the same shell and profile as the agents'."""
    shell = os.environ.get("SHELL") or "/bin/bash"
    return [f"cd {device_home(workdir)} && HOME={device_home(workdir)} exec {shell} -l"]


# -- the center -------------------------------------------------------------------------


@contextmanager
def center(workdir: Path, database_url: str, **settings: Any) -> Iterator[ServerProcess]:
    """As ``tests.fixtures.center.secure_center``, with the bench's own server settings."""
    port = free_port()
    server_port = free_port()  # the server's own listener (certificate and password)
    pki = workdir / "state" / "pki"
    server = ServerProcess(
        workdir, database_url, f"mqtts://127.0.0.1:{server_port}",
        device_broker_url=f"mqtts://127.0.0.1:{port}",
        broker_ca=str(pki / "ca.pem"), broker_cert=str(pki / "server-client.pem"),
        broker_key=str(pki / "server-client.key"), **settings,
    )  # fmt: skip
    done = server.cli("ca", "init")
    assert done.returncode == 0, done.stderr
    broker_dir = Path(tempfile.mkdtemp(prefix="fieldlink-broker-"))
    broker_dir.chmod(0o755)  # Mosquitto drops root for its own user
    done = server.cli(
        "broker-config", "--out", str(broker_dir), "--port", str(port), "--bind", "127.0.0.1",
        "--server-port", str(server_port), "--server-bind", "127.0.0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    broker = TlsBroker(broker_dir, port, server_port)
    broker.start()
    try:
        with server:
            yield server
    finally:
        broker.stop()
        shutil.rmtree(broker_dir, ignore_errors=True)


def start_agent(
    server: ServerProcess,
    workdir: Path,
    serial: str,
    services: dict[str, str],
    max_sessions: int,
    command: list[str] | None = None,
) -> tuple[str, AgentProcess]:
    """Register, enroll and start one agent (``command``: instead of ``fieldlink agent``)."""
    registered = server.api(
        "POST", "/devices",
        json={"serial": serial, "model": "bench", "type": "mfp", "customer": "Bench"},
    )  # fmt: skip
    device_id, token = registered["device"]["id"], registered["enrollment_token"]
    device_dir = workdir / f"device-{serial}"
    enrolled = enroll_agent(server, token, device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    agent = AgentProcess(workdir, device_id, "unused")
    agent.config = device_dir / "agent.toml"
    agent._spawn(
        [*(command or [sys.executable, "-m", "shared", "agent"]), "run", "--config",
         str(agent.config)],
        FIELDLINK_INTERVAL_S="10", FIELDLINK_STATE_DIR=str(device_dir / "state"),
        FIELDLINK_PROFILE="mfp", FIELDLINK_SIMULATE="true", FIELDLINK_KEEPALIVE_S="30",
        HOME=str(device_home(workdir)), FIELDLINK_SERVICES=json.dumps(services),
        FIELDLINK_POLICY=json.dumps({"services": list(services), "consent": "none",
                                     "idle_timeout_s": 3600, "max_sessions": max_sessions,
                                     "sftp_folders": {"files": str(workdir / "device-files")}}),
    )  # fmt: skip
    return device_id, agent


@dataclass
class Bench:
    """The running center and the operator's access to it."""

    server: ServerProcess
    token: str
    http: httpx.AsyncClient
    workdir: Path
    gateway_port: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ws_url(self, path: str) -> str:
        return self.server.url.replace("http://", "ws://") + "/api/v1" + path

    async def open_session(self, device_id: str, reason: str) -> str:
        answer = await self.http.post(f"/devices/{device_id}/sessions", json={"reason": reason})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def close_session(self, session_id: str) -> dict[str, Any]:
        answer = await self.http.delete(f"/sessions/{session_id}")
        assert answer.status_code == 200, answer.text
        row: dict[str, Any] = answer.json()
        return row


def log_times(path: Path) -> list[tuple[float, dict[str, Any]]]:
    """The JSON lines of a server's or an agent's log, each with its time (epoch seconds)."""
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            when = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except (ValueError, KeyError):
            continue
        entries.append((when.timestamp(), entry))
    return entries


def add_operator(server: ServerProcess) -> str:
    """The operator :data:`OPERATOR` added at the center; its bearer token."""
    done = server.cli("user", "add", OPERATOR, "--role", "operator", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    token: str = httpx.post(
        f"{server.url}/api/v1/auth/token",
        data={"username": OPERATOR, "password": PASSWORD}, timeout=30,
    ).json()["access_token"]  # fmt: skip
    return token


def add_operator_key(server: ServerProcess, workdir: Path) -> bool:
    """An SSH key for the operator, registered for the gateway (``False``: no gateway yet)."""
    key = workdir / "operator"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    done = server.cli("user", "add-key", OPERATOR, str(key.with_suffix(".pub")))
    return done.returncode == 0


def gateway_port(server: ServerProcess) -> int | None:
    """The SSH gateway's port, from the server's log (``None``: this server has no gateway)."""
    for _when, entry in log_times(server.log_path):
        match = re.search(r"SSH gateway (?:listening )?on [^ ]*:(\d+)", entry["msg"])
        if match:
            return int(match.group(1))
    return None


def gateway_options(bench: Bench) -> list[str]:
    """ssh options for the SSH gateway, as the operator whose key the bench registered."""
    return [
        "-p", str(bench.gateway_port), "-i", str(bench.workdir / "operator"), "-c", CIPHER,
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
