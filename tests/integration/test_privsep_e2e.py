"""The documented systemd layout end to end, with real accounts (the tests run as root).

Root enrolls the device for the agent's service account (``--user``), the agent
runs as that unprivileged account, the privileged shell helper runs as root,
and an operator's remote shell, through the real server, runs as a separate
maintenance account that can see every process. Nothing the shell started
outlives the session, nor an agent killed with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect

from tests.fixtures.accounts import (
    AGENT_USER,
    SHELL_USER,
    ShellHelperProcess,
    as_user,
    can_make_accounts,
    privsep_accounts,
)
from tests.fixtures.center import add_operator, operator_token, secure_center
from tests.fixtures.managed import ManagedProcess
from tests.fixtures.processes import ServerProcess, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not can_make_accounts(), reason="needs root and useradd"),
]

CHECKOUT = Path(__file__).resolve().parents[2]
FIELDLINK = [sys.executable, "-m", "shared"]


@dataclass
class Site:
    server: ServerProcess
    device_id: str
    config: Path
    state: Path
    directory: Path
    enrolled_cert: bytes = b""
    agent: subprocess.Popen[bytes] | None = None
    token: str = ""

    def __post_init__(self) -> None:
        self.agent_process = ManagedProcess("agent", self.directory / "agent.log")

    def start_agent(self) -> None:
        self.agent = self.agent_process.spawn(
            [*FIELDLINK, "agent", "run", "--config", str(self.config)],
            cwd=CHECKOUT,
            env={"PYTHONPATH": str(CHECKOUT), "PATH": os.environ["PATH"],
                 "FIELDLINK_INTERVAL_S": "1", "FIELDLINK_KEEPALIVE_S": "5",
                 "FIELDLINK_RECONNECT_MIN_S": "0.2", "FIELDLINK_RECONNECT_MAX_S": "1",
                 "FIELDLINK_SIMULATE": "true", "FIELDLINK_PROFILE": "mfp"},
            **as_user(AGENT_USER),
        )  # fmt: skip
        wait_until(lambda: self.server.device(self.device_id)["online"], timeout=60)

    def agent_log(self) -> str:
        return (self.directory / "agent.log").read_text(errors="replace")[-3000:]

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.server.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kwargs,
        )

    def open_session(self) -> str:
        answer = self.call(
            "POST", f"/devices/{self.device_id}/sessions", json={"reason": "spooler hangs"}
        )
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        return session_id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp_path = tmp_path_factory.mktemp("privsep")
    # The device's folders: not under pytest's 0700 tmp_path, which the agent cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-device-"))
    directory.chmod(0o755)
    with (
        privsep_accounts(CHECKOUT),
        secure_center(tmp_path, f"sqlite:///{tmp_path / 'fieldlink.db'}") as (server, _broker),
    ):
        registered = server.api(
            "POST", "/devices",
            json={"serial": "PS-1", "model": "MP 6055", "type": "mfp", "customer": "Acme"},
        )  # fmt: skip
        device_id, token = registered["device"]["id"], registered["enrollment_token"]
        etc, state = directory / "etc", directory / "state"
        enrolled = subprocess.run(
            [*FIELDLINK, "agent", "enroll", "--server", server.url, "--token", token,
             "--dir", str(etc), "--state-dir", str(state), "--user", AGENT_USER],
            capture_output=True, text=True, timeout=60, check=False, cwd=CHECKOUT,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        config = etc / "agent.toml"
        socket_path = directory / "shell.sock"
        enrolled_cert = (state / "device.pem").read_bytes()
        with config.open("a") as out:
            # Renew at once (the certificate expires within 1000 days): as the agent's
            # account, into its state directory.
            out.write(
                "renew_before_days = 1000\n"
                f'\n[agent.policy]\nconsent = "none"\nidle_timeout_s = 600\n'
                f'shell_helper = "{socket_path}"\nshell_user = "{SHELL_USER}"\n'
            )
        helper = ShellHelperProcess(directory, config, socket_path, checkout=CHECKOUT)
        site = Site(server, device_id, config, state, directory, enrolled_cert=enrolled_cert)
        try:
            helper.start()
            add_operator(server)
            site.token = operator_token(server)
            site.start_agent()
            yield site
        finally:
            site.agent_process.kill()
            helper.stop()
            shutil.rmtree(directory, ignore_errors=True)


def _sleepers(marker: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-u", SHELL_USER, "-f", f"sleep {marker}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [int(pid) for pid in found.stdout.split()]


def test_enroll_as_root_leaves_the_keys_to_the_service_account_only(site: Site) -> None:
    agent = pwd.getpwnam(AGENT_USER)
    for name in ("device.key", "ssh_host_ed25519_key"):
        info = (site.state / name).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (agent.pw_uid, 0o600), name
    for name in ("device.pem", "ca.pem", "command-signing.pub.pem"):
        assert (site.state / name).stat().st_uid == agent.pw_uid, name
    info = site.state.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (agent.pw_uid, 0o700)
    # The configuration stays root's: the agent reads it, never changes it.
    assert site.config.stat().st_uid == 0
    assert f'key_file = "{site.state / "device.key"}"' in site.config.read_text()
    # Only the service account reads the key: not the maintenance account.
    for user, readable in ((AGENT_USER, True), (SHELL_USER, False)):
        done = subprocess.run(
            ["cat", str(site.state / "device.key")], capture_output=True, check=False,
            **as_user(user),  # type: ignore[arg-type]
        )  # fmt: skip
        assert (done.returncode == 0) is readable, user


def test_the_unprivileged_agent_renews_its_certificate_in_its_state_directory(
    site: Site,
) -> None:
    wait_until(lambda: (site.state / "device.pem").read_bytes() != site.enrolled_cert, timeout=60)
    agent = pwd.getpwnam(AGENT_USER)
    key = (site.state / "device.key").stat()
    assert (key.st_uid, stat.S_IMODE(key.st_mode)) == (agent.pw_uid, 0o600)
    assert (site.state / "device.pem").stat().st_uid == agent.pw_uid
    wait_until(lambda: site.server.device(site.device_id)["online"], timeout=60)


def test_the_agent_runs_unprivileged_and_the_shell_as_the_maintenance_account(
    site: Site,
) -> None:
    assert site.agent is not None
    status = Path(f"/proc/{site.agent.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(pwd.getpwnam(AGENT_USER).pw_uid)] * 4

    sid = site.open_session()
    ran = site.call(
        "POST", f"/sessions/{sid}/exec", json={"command": "id -un; ps -e -o user= | sort -u"}
    )
    assert ran.status_code == 200, ran.text
    body = ran.json()
    assert body["exit_status"] == 0, body
    lines = body["stdout"].splitlines()
    assert lines[0] == SHELL_USER
    # Every process is visible, not only the shell's own: root's are listed.
    assert "root" in lines[1:]
    assert site.call("DELETE", f"/sessions/{sid}").status_code == 200


async def _start_in_terminal(site: Site, sid: str, marker: str) -> Any:
    """Open the browser terminal, leave a process that ignores SIGHUP; the open socket."""
    socket = await connect(
        site.server.url.replace("http://", "ws://")
        + f"/api/v1/sessions/{sid}/terminal?cols=80&rows=24",
        additional_headers={"Authorization": f"Bearer {site.token}"},
    )
    await socket.send(f"nohup sleep {marker} >/dev/null 2>&1 & echo started-$((6*7))\n".encode())
    output = b""
    async with asyncio.timeout(30):
        while b"started-42" not in output:
            message = await socket.recv()
            if isinstance(message, bytes):
                output += message
    return socket


def test_nothing_the_shell_started_outlives_the_session(site: Site) -> None:
    marker = f"{7000 + secrets.randbelow(1000)}.25"
    sid = site.open_session()

    async def scenario() -> None:
        socket = await _start_in_terminal(site, sid, marker)
        assert len(_sleepers(marker)) == 1
        assert site.call("DELETE", f"/sessions/{sid}").status_code == 200
        await socket.close()

    asyncio.run(scenario())
    wait_until(lambda: not _sleepers(marker), timeout=15)


def test_nothing_the_shell_started_outlives_an_agent_killed_with_sigkill(site: Site) -> None:
    marker = f"{8000 + secrets.randbelow(1000)}.25"
    sid = site.open_session()

    async def scenario() -> None:
        socket = await _start_in_terminal(site, sid, marker)
        assert len(_sleepers(marker)) == 1
        assert site.agent is not None
        os.kill(site.agent.pid, signal.SIGKILL)
        site.agent.wait()
        site.agent = None
        await socket.close()

    asyncio.run(scenario())
    wait_until(lambda: not _sleepers(marker), timeout=15)
    helper_log = site.directory / "helper.log"
    wait_until(lambda: f"session {sid}: ended" in helper_log.read_text(), timeout=15)
    site.start_agent()  # the next session works again
    sid = site.open_session()
    ran = site.call("POST", f"/sessions/{sid}/exec", json={"command": "id -un"})
    assert ran.json().get("stdout") == f"{SHELL_USER}\n", (ran.json(), site.agent_log())


def test_a_key_the_agent_cannot_read_is_named_in_the_error(site: Site) -> None:
    key = site.directory / "root-only.key"
    shutil.copy(site.state / "device.key", key)
    os.chown(key, 0, 0)
    key.chmod(0o600)
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from shared.broker_url import BrokerAddress\n"
        "from agent.health.link_setup import tls_context\n"
        "from shared.errors import ConfigError\n"
        "try:\n"
        f"    tls_context(BrokerAddress.parse('mqtts://127.0.0.1:1'), Path('{site.state}/ca.pem'),"
        f" Path('{site.state}/device.pem'), Path('{key}'))\n"
        "except ConfigError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False,
        cwd=CHECKOUT, env={"PYTHONPATH": str(CHECKOUT)},
        **as_user(AGENT_USER),  # type: ignore[arg-type]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"key_file: cannot read {key}: Permission denied" in done.stdout
    assert "device.pem" not in done.stdout


def test_nothing_the_shell_started_outlives_a_server_crash(site: Site) -> None:
    marker = f"{9000 + secrets.randbelow(1000)}.25"
    sid = site.open_session()

    async def scenario() -> None:
        socket = await _start_in_terminal(site, sid, marker)
        assert len(_sleepers(marker)) == 1
        site.server.kill()  # the tunnel drops with the server: the agent ends the session
        with contextlib.suppress(Exception):
            await socket.close()

    try:
        asyncio.run(scenario())
        wait_until(lambda: not _sleepers(marker), timeout=30)
    finally:
        site.server.start()
    wait_until(lambda: site.server.device(site.device_id)["online"], timeout=60)
