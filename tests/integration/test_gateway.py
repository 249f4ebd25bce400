"""The SSH gateway end to end: the real OpenSSH client, the real server, a real enrolled agent.

Operators add their public key with ``fieldlink user add-key``; then ``ssh``,
``scp``, ``sftp`` and ``ssh -L`` reach the device through audited sessions.
The client checks the gateway's host key against a known_hosts file (strict)
and offers only the operator's key (batch mode, no agent, no config file).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.center import add_operator, enroll_agent, enrolled_agent, secure_center
from tests.fixtures.ports import free_port
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until
from tests.fixtures.web_panel import PAGE

# `make test` installs the OpenSSH client (openssh-client) where it is missing.
pytestmark = pytest.mark.integration


def keygen(path: Path) -> Path:
    """An Ed25519 key pair made by OpenSSH's own ssh-keygen; the private key's path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class Gateway:
    """The center, its gateway's address, the device, and an operator's SSH set-up."""

    server: ServerProcess
    port: int
    device_id: str
    files: Path
    known_hosts: Path
    key: Path
    tmp: Path
    device_dir: Path

    def options(self, key: Path | None = None, reason: str | None = None, **env: str) -> list[str]:
        options = [
            "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=20",
            "-i", str(key or self.key),
        ]  # fmt: skip
        if reason is not None:
            env["FIELDLINK_REASON"] = reason
        if env:
            options += ["-o", "SetEnv=" + " ".join(f'{k}="{v}"' for k, v in env.items())]
        return options

    def ssh(
        self,
        command: str | None,
        *extra: str,
        device: str | None = None,
        key: Path | None = None,
        reason: str | None = None,
        stdin: bytes = b"",
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """``ssh [EXTRA] DEVICE@gateway [COMMAND]`` (no command: a shell)."""
        target = f"{device or self.device_id}@127.0.0.1"
        return subprocess.run(
            ["ssh", *self.options(key, reason, **(env or {})), "-p", str(self.port), *extra,
             target,
             *([command] if command is not None else [])],
            input=stdin, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip

    def scp(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["scp", *self.options(), "-P", str(self.port), *args],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip

    def remote(self, path: str) -> str:
        return f"{self.device_id}@127.0.0.1:{path}"

    def site(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``fieldlink agent ...`` on the device (the site's panel)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
        env["FIELDLINK_STATE_DIR"] = str(self.tmp / "agent-state")
        return subprocess.run(
            [sys.executable, "-m", "shared", "agent", *args,
             "--config", str(self.device_dir / "agent.toml")],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.server.api(method, path, **kwargs)

    def sessions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/sessions", params={"device_id": self.device_id, "limit": 200}
        )["items"]
        return found

    def last_session(self) -> dict[str, Any]:
        return max(self.sessions(), key=lambda s: s["created_at"])

    def closed_session(self, session_id: str) -> dict[str, Any]:
        def closed() -> dict[str, Any] | None:
            row: dict[str, Any] = self.api("GET", f"/sessions/{session_id}")
            return row if row["state"] == "closed" else None

        wait_until(closed, timeout=20)
        row = closed()
        assert row is not None
        return row

    def audit(self, action: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/audit", params={"action": action, "limit": 500}
        )["items"]
        return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, web_panel: int) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    files = tmp / "device-files"
    files.mkdir()
    (files / "printer.log").write_text("jam at tray 2\n")
    database = tmp / "fieldlink.db"
    with secure_center(tmp, f"sqlite:///{database}") as (server, _broker):
        # The gateway on a free port of its own (2222 may be taken on a shared machine).
        port = free_port()
        server.restart_with_gateway_port(port)
        with enrolled_agent(
            server, tmp, "GW-1",
            services={"web": f"127.0.0.1:{web_panel}", "vnc": "127.0.0.1:1"},
            policy={"services": ["web"], "consent": "none",
                    "sftp_folders": {"files": str(files)}, "idle_timeout_s": 600,
                    "shell": "/bin/sh"},
        ) as (device_id, _agent, device_dir):  # fmt: skip
            host_key = (tmp / "state" / "ssh_gateway_ed25519_key.pub").read_text().split()
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
            add_operator(server)
            key = keygen(tmp / "olga_ed25519")
            done = server.cli("user", "add-key", "olga", str(key) + ".pub")
            assert done.returncode == 0, done.stderr
            yield Gateway(server, port, device_id, files, known_hosts, key, tmp, device_dir)


def test_the_gateway_logs_its_host_key_fingerprint(gateway: Gateway) -> None:
    public = (gateway.tmp / "state" / "ssh_gateway_ed25519_key.pub").read_text()
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input=public.encode(), capture_output=True, check=True
    ).stdout.split()[1]
    assert shown.decode() in gateway.server.log_path.read_text()
    assert (gateway.tmp / "state" / "ssh_gateway_ed25519_key").stat().st_mode & 0o777 == 0o600


def test_a_shell_in_a_pty_runs_a_command_and_is_recorded(gateway: Gateway) -> None:
    done = gateway.ssh(
        None,
        "-tt",
        reason="toner error, customer on the phone",
        stdin=b"stty size; echo hello-$((40+2))\nexit 3\n",
    )
    assert done.returncode == 3, done.stderr
    assert b"hello-42" in done.stdout
    row = gateway.closed_session(gateway.last_session()["id"])
    assert row["origin"] == "gateway"
    assert row["operator"] == "olga"
    assert row["reason"] == "toner error, customer on the phone"
    assert row["close_reason"] == "operator"
    assert "shell" in row["services_used"]
    assert row["has_recording"] is True
    recording = httpx.get(
        f"{gateway.server.url}/api/v1/sessions/{row['id']}/recording",
        headers={"Authorization": f"Bearer {gateway.server.token}"},
        timeout=10,
    )
    assert recording.status_code == 200
    header, *events = (json.loads(line) for line in recording.text.splitlines())
    assert header["version"] == 2
    assert "hello-42" in "".join(e[2] for e in events if e[1] == "o")
    logins = gateway.audit("gateway.login")
    assert any(e["actor"] == "olga" and e["target"] == gateway.device_id for e in logins)


def test_the_terminal_size_and_its_changes_reach_the_device_and_the_recording(
    gateway: Gateway,
) -> None:
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(
        ["ssh", *gateway.options(), "-p", str(gateway.port), "-t",
         f"{gateway.device_id}@127.0.0.1"],
        stdin=terminal, stdout=terminal, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    screen = b""

    def until(needle: bytes, command: bytes, attempts: int = 10) -> None:
        nonlocal screen
        for _ in range(attempts):
            os.write(master, command)
            deadline = time.monotonic() + 3
            while needle not in screen and time.monotonic() < deadline:
                if select.select([master], [], [], 0.5)[0]:
                    screen += os.read(master, 4096)
            if needle in screen:
                return
        raise AssertionError(screen[-500:])

    try:
        until(b"30 100", b"stty size\n")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process.send_signal(signal.SIGWINCH)
        until(b"40 120", b"stty size\n")
        os.write(master, b"exit 0\n")
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(master)
    row = gateway.closed_session(gateway.last_session()["id"])
    recording = httpx.get(
        f"{gateway.server.url}/api/v1/sessions/{row['id']}/recording",
        headers={"Authorization": f"Bearer {gateway.server.token}"},
        timeout=10,
    )
    header, *events = (json.loads(line) for line in recording.text.splitlines())
    assert (header["width"], header["height"]) == (100, 30)
    assert [e[2] for e in events if e[1] == "r"][-1:] == ["120x40"]


def test_exec_in_a_pty_and_what_the_gateway_does_not_offer(gateway: Gateway) -> None:
    done = gateway.ssh("tty; exit 4", "-tt")
    assert done.returncode == 4
    assert b"/dev/" in done.stdout
    remote = subprocess.run(
        ["ssh", *gateway.options(), "-p", str(gateway.port), "-N", "-o",
         "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:80", f"{gateway.device_id}@127.0.0.1"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert remote.returncode == 255
    assert b"remote port forwarding failed" in remote.stderr
    other = gateway.ssh("true", "-s")  # a subsystem other than sftp
    assert other.returncode != 0


def test_exec_passes_output_and_exit_status_through(gateway: Gateway) -> None:
    done = gateway.ssh("echo out-$((6*7)); echo err >&2; exit 7")
    assert done.returncode == 7
    assert done.stdout == b"out-42\n"
    assert b"err\n" in done.stderr
    row = gateway.closed_session(gateway.last_session()["id"])
    assert row["reason"] == "ssh gateway"
    assert row["services_used"] == ["exec"]
    assert row["has_recording"] is False
    assert row["incident_id"] is None
    commands = [e["details"]["command"] for e in gateway.audit("session.exec")]
    assert "echo out-$((6*7)); echo err >&2; exit 7" in commands


def test_the_client_names_the_reason_and_the_incident(gateway: Gateway) -> None:
    incident = gateway.api(
        "POST", "/incidents",
        json={"device_id": gateway.device_id, "opened_at": "2026-01-05T09:00:00Z",
              "symptom": "paper jam"},
    )  # fmt: skip
    env = {"FIELDLINK_INCIDENT": str(incident["id"])}
    done = gateway.ssh("true", reason="paper jam, tray 2", env=env)
    assert done.returncode == 0, done.stderr
    row = gateway.closed_session(gateway.last_session()["id"])
    assert (row["reason"], row["incident_id"]) == ("paper jam, tray 2", incident["id"])
    bad = gateway.ssh("true", env={"FIELDLINK_INCIDENT": "twelve"})
    assert bad.returncode == 255
    assert b"fieldlink: FIELDLINK_INCIDENT must be an incident number" in bad.stderr


def test_scp_round_trip_of_20_mb(gateway: Gateway) -> None:
    original = gateway.tmp / "firmware.bin"
    original.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    up = gateway.scp(str(original), gateway.remote("/firmware.bin"))
    assert up.returncode == 0, up.stderr
    assert hashlib.sha256((gateway.files / "firmware.bin").read_bytes()).hexdigest() == digest
    back = gateway.tmp / "firmware.back"
    down = gateway.scp(gateway.remote("/firmware.bin"), str(back))
    assert down.returncode == 0, down.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    # The legacy scp protocol (-O) runs "scp -t" on the device, confined the same way.
    legacy = gateway.scp("-O", str(gateway.files / "printer.log"), gateway.remote("/copy.log"))
    assert legacy.returncode == 0, legacy.stderr
    assert (gateway.files / "copy.log").read_text() == "jam at tray 2\n"


def test_sftp_lists_and_fetches_and_stays_in_the_folder(gateway: Gateway) -> None:
    batch = gateway.tmp / "batch"
    fetched = gateway.tmp / "fetched.log"
    batch.write_text(f"ls /\nget /printer.log {fetched}\n")
    done = subprocess.run(
        ["sftp", *gateway.options(), "-P", str(gateway.port), "-b", str(batch),
         f"{gateway.device_id}@127.0.0.1"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"printer.log" in done.stdout
    assert fetched.read_text() == "jam at tray 2\n"
    outside = gateway.scp(gateway.remote("/../../etc/hostname"), str(gateway.tmp / "x"))
    assert outside.returncode != 0
    row = gateway.closed_session(gateway.last_session()["id"])
    assert row["services_used"] == ["sftp"]


def _forwarding(gateway: Gateway, spec: str) -> tuple[subprocess.Popen[bytes], int]:
    local = free_port()
    process = subprocess.Popen(
        ["ssh", *gateway.options(), "-p", str(gateway.port), "-N",
         "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:{spec}",
         f"{gateway.device_id}@127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", local)) == 0

    try:
        wait_until(lambda: listening() or process.poll() is not None, timeout=20)
    finally:
        if process.poll() is not None or not listening():
            stderr = _stop(process)
            pytest.fail(f"ssh -L did not start: {stderr.decode(errors='replace')}")
    return process, local


def _stop(process: subprocess.Popen[bytes]) -> bytes:
    """End ``ssh -N``: SIGTERM, then SIGKILL.

    OpenSSH 9.2's client can miss a SIGTERM that lands right after it handled a
    channel (it then sleeps in poll for minutes); either way the connection drops.
    """
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=20)
    return stderr


def test_a_local_forward_reaches_the_allowlisted_web_service(gateway: Gateway) -> None:
    process, local = _forwarding(gateway, "web:80")
    try:
        for _ in range(3):
            page = httpx.get(f"http://127.0.0.1:{local}/", timeout=20)
            assert page.status_code == 200
            assert page.content == PAGE
    finally:
        _stop(process)
    row = gateway.closed_session(gateway.last_session()["id"])
    assert row["services_used"] == ["forward:web"]
    assert row["close_reason"] == "operator"


def test_a_forward_outside_the_allowlist_is_refused_with_the_reason(gateway: Gateway) -> None:
    process, local = _forwarding(gateway, "vnc:5900")
    try:
        with socket.create_connection(("127.0.0.1", local), timeout=20) as client:
            client.settimeout(20)
            assert client.recv(100) == b""  # OpenSSH closes it: the channel was refused
    finally:
        stderr = _stop(process)
    assert b"open failed: administratively prohibited" in stderr
    assert b"not an allowlisted service" in stderr
    row = gateway.closed_session(gateway.last_session()["id"])
    assert "forward:vnc" not in row["services_used"]
    wait_until(
        lambda: any(
            r["kind"] == "forward" for r in gateway.api("GET", f"/sessions/{row['id']}")["refusals"]
        ),
        timeout=15,
    )


def test_an_unknown_key_is_refused_and_audited(gateway: Gateway) -> None:
    stranger = keygen(gateway.tmp / "stranger_ed25519")
    done = gateway.ssh("true", key=stranger)
    assert done.returncode == 255
    assert b"Permission denied (publickey)" in done.stderr
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(stranger)], capture_output=True, check=True
    ).stdout.split()[1]

    def audited() -> bool:
        return any(
            e["details"]["reason"] == "unknown key"
            and fingerprint.decode() in e["details"]["fingerprint"]
            for e in gateway.audit("gateway.login_failed")
        )

    wait_until(audited, timeout=10)


def _user_with_key(gateway: Gateway, name: str, role: str = "operator") -> Path:
    done = gateway.server.cli("user", "add", name, "--role", role, stdin="pw-12345678\n")
    assert done.returncode == 0, done.stderr
    key = keygen(gateway.tmp / f"{name}_ed25519")
    done = gateway.server.cli("user", "add-key", name, f"{key}.pub", "--name", "laptop")
    assert done.returncode == 0, done.stderr
    return key


def _set_user(gateway: Gateway, name: str, column: str, value: object) -> None:
    # No command lowers a role below operator or disables a user yet: write the row as one would.
    with sqlite3.connect(gateway.tmp / "fieldlink.db") as db:
        db.execute(f'UPDATE "user" SET {column} = ? WHERE username = ?', (value, name))  # noqa: S608


def test_users_who_may_not_open_sessions_are_refused(gateway: Gateway) -> None:
    before = len(gateway.sessions())
    disabled = _user_with_key(gateway, "dora")
    _set_user(gateway, "dora", "disabled", 1)
    done = gateway.ssh("true", key=disabled)
    assert done.returncode == 255
    assert b"user dora is disabled" in done.stderr

    viewer = _user_with_key(gateway, "vic")
    _set_user(gateway, "vic", "role", "viewer")
    done = gateway.ssh("true", key=viewer)
    assert done.returncode == 255
    assert b"does not have the operator role" in done.stderr
    assert len(gateway.sessions()) == before

    def audited() -> set[str]:
        return {
            e["actor"]
            for e in gateway.audit("gateway.login_failed")
            if "operator role" in e["details"]["reason"] or "disabled" in e["details"]["reason"]
        }

    wait_until(lambda: audited() >= {"dora", "vic"}, timeout=10)


def test_a_revoked_or_unknown_device_is_refused(gateway: Gateway) -> None:
    registered = gateway.api(
        "POST", "/devices",
        json={"serial": "GW-REV", "model": "X", "type": "server", "customer": "Acme"},
    )  # fmt: skip
    revoked_id = registered["device"]["id"]
    enrolled = enroll_agent(gateway.server, registered["enrollment_token"], gateway.tmp / "rev")
    assert enrolled.returncode == 0, enrolled.stderr
    done = gateway.server.cli("device", "revoke", revoked_id)
    assert done.returncode == 0, done.stderr
    done = gateway.ssh("true", device=revoked_id)
    assert done.returncode == 255
    assert f"device {revoked_id} is revoked".encode() in done.stderr
    done = gateway.ssh("true", device="mfp-nowhere")
    assert done.returncode == 255
    assert b"no device 'mfp-nowhere'" in done.stderr
    done = gateway.ssh("true", device="Not_A_Device")
    assert done.returncode == 255
    assert b"is not a device id" in done.stderr


def _interactive_shell(
    gateway: Gateway, key: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``ssh -tt DEVICE@gateway`` left running; its session's id once it is active."""
    process = subprocess.Popen(
        ["ssh", *gateway.options(key), "-p", str(gateway.port), "-tt",
         f"{gateway.device_id}@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(b"echo ready-$((40+2))\n")
    process.stdin.flush()
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready-42" not in seen and time.monotonic() < deadline:
            readable, _, _ = select.select([process.stdout], [], [], 1.0)
            if readable:
                seen += os.read(process.stdout.fileno(), 4096)
        assert b"ready-42" in seen, seen
    except AssertionError:
        process.kill()
        process.communicate()
        raise
    (active,) = [s for s in gateway.sessions() if s["state"] == "active"]
    return process, active["id"]


def _ended(process: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    try:
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


def test_a_session_closed_by_an_admin_disconnects_the_client_with_the_reason(
    gateway: Gateway,
) -> None:
    process, session_id = _interactive_shell(gateway)
    gateway.api("DELETE", f"/sessions/{session_id}")
    status, stderr = _ended(process)
    assert status == 255
    assert b"fieldlink: the session was closed by an operator (operator)" in stderr


def test_disabling_the_user_ends_their_live_ssh_within_seconds(gateway: Gateway) -> None:
    key = _user_with_key(gateway, "dina")
    process, session_id = _interactive_shell(gateway, key)
    started = time.monotonic()
    done = gateway.server.cli("user", "disable", "dina")
    assert done.returncode == 0, done.stderr
    status, stderr = _ended(process)
    assert time.monotonic() - started < 20  # within seconds, not at the session's 4 h cap
    assert status == 255
    assert b"your access was revoked (access_revoked)" in stderr
    closed = gateway.closed_session(session_id)
    assert closed["close_reason"] == "access_revoked"
    (entry,) = [
        e for e in gateway.audit("session.close") if e["details"]["session_id"] == session_id
    ]
    assert entry["details"]["close_reason"] == "access_revoked"
    assert entry["actor"] == "dina"


def test_a_session_the_site_ends_disconnects_the_client_with_the_reason(gateway: Gateway) -> None:
    process, session_id = _interactive_shell(gateway)
    ended = gateway.site("end", session_id)
    assert ended.returncode == 0, ended.stderr
    status, stderr = _ended(process)
    assert status == 255
    assert b"fieldlink: the session was ended by the site (site_ended)" in stderr
    assert gateway.closed_session(session_id)["close_reason"] == "site_ended"


def _read_until(stream: Any, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        readable, _, _ = select.select([stream], [], [], 1.0)
        if readable:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    assert needle in seen, seen
    return seen


def test_the_client_waits_while_the_site_approves_or_denies(gateway: Gateway) -> None:
    registered = gateway.api(
        "POST", "/devices",
        json={"serial": "GW-ASK", "model": "CT 9", "type": "imaging", "customer": "Clinic"},
    )  # fmt: skip
    device_id = registered["device"]["id"]
    device_dir = gateway.tmp / "asking-device"
    enrolled = enroll_agent(gateway.server, registered["enrollment_token"], device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    agent = AgentProcess(gateway.tmp, device_id, "unused")
    agent.config = device_dir / "agent.toml"
    state = gateway.tmp / "asking-state"
    agent._spawn(
        [sys.executable, "-m", "shared", "agent", "run", "--config", str(agent.config)],
        FIELDLINK_INTERVAL_S="1", FIELDLINK_STATE_DIR=str(state), FIELDLINK_PROFILE="imaging",
        FIELDLINK_SIMULATE="true", FIELDLINK_KEEPALIVE_S="5",
        FIELDLINK_POLICY=json.dumps({"consent": "required", "approval_timeout_s": 60,
                                     "shell": "/bin/sh"}),
    )  # fmt: skip
    site = Gateway(**{**gateway.__dict__, "device_id": device_id, "device_dir": device_dir})

    def panel(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
        env["FIELDLINK_STATE_DIR"] = str(state)
        return subprocess.run(
            [sys.executable, "-m", "shared", "agent", *args, "--config", str(agent.config)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    def ask(decision: str) -> tuple[int, bytes, bytes]:
        process = subprocess.Popen(
            ["ssh", *site.options(), "-p", str(site.port), f"{device_id}@127.0.0.1",
             "echo approved-$((6*7))"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            notice = _read_until(process.stderr, b"waiting for the site to approve the session")
            waiting = [s for s in site.sessions() if s["state"] == "awaiting_consent"]
            assert len(waiting) == 1
            assert process.poll() is None  # the client waits
            done = panel(decision, waiting[0]["id"])
            assert done.returncode == 0, done.stderr
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return process.returncode, stdout, notice + stderr

    try:
        wait_until(lambda: gateway.server.device(device_id)["online"], timeout=30)
        status, stdout, _ = ask("approve")
        assert (status, stdout) == (0, b"approved-42\n")
        status, stdout, stderr = ask("deny")
        assert status == 255
        assert stdout == b""
        assert b"was not approved by the site (site_denied)" in stderr
    finally:
        agent.stop()
