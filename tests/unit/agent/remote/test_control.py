"""The agent's local control channel: a private Unix socket, its peer check, and the CLI over it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.remote.control import ControlError, ControlServer, control_socket_path, request
from agent.remote.policy import SitePolicy
from agent.remote.session_runners import SessionHooks
from agent.remote.sessions import SessionController
from shared.errors import AuthError, Conflict, NotFound, UnavailableError
from shared.ids import new_id
from tests.unit.agent.remote.test_sessions import ScriptedSession, open_body
from tests.unit.agent.remote.test_sessions import request as command_request

DEVICE = "mfp-control-1"


class Agent:
    """A controller (consent required) served on a control socket, as the daemon does."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = control_socket_path(state_dir)
        self.dialed: list[ScriptedSession] = []
        self.controller = SessionController(
            DEVICE,
            SitePolicy(consent="required", approval_timeout_s=120),
            host_key_path=state_dir / "ssh_host_ed25519_key",
            publish=lambda _event: None,
            session_factory=self._dial,
        )
        self.server = ControlServer(self.path, self.controller)

    def _dial(self, spec: Any, policy: SitePolicy, hooks: SessionHooks) -> ScriptedSession:
        session = ScriptedSession(spec, policy, hooks)
        self.dialed.append(session)
        return session

    async def open(self, **changes: Any) -> str:
        body = open_body(**changes)
        await self.controller.handle_open(command_request("session.open", body))
        return str(body["session_id"])

    async def ask(self, op: str, session_id: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(request, self.path, op, session_id)


@contextlib.asynccontextmanager
async def running(state_dir: Path) -> AsyncIterator[Agent]:
    agent = Agent(state_dir)
    await agent.server.start()
    try:
        yield agent
    finally:
        await agent.server.close()
        await agent.controller.shutdown()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running(tmp_path / "state") as started:
        yield started


async def raw(path: Path, data: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    answer: dict[str, Any] = json.loads(line)
    return answer


# the socket


async def test_socket_is_private_in_a_private_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    async with running(state_dir) as agent:
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        info = agent.path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert not agent.path.exists()  # removed on close


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(control_socket_path(state_dir)))
    stale.close()  # a crashed agent leaves its socket file behind
    async with running(state_dir) as agent:
        assert (await agent.ask("sessions"))["sessions"] == []
        second = ControlServer(agent.path, agent.controller)
        with pytest.raises(ControlError, match="another agent already listens"):
            await second.start()
        assert (await agent.ask("sessions"))["ok"]


async def test_a_path_longer_than_sun_path_still_works(tmp_path: Path) -> None:
    state_dir = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    assert len(str(control_socket_path(state_dir))) > 108
    async with running(state_dir) as agent:
        session_id = await agent.open()
        [listed] = (await agent.ask("sessions"))["sessions"]
        assert listed["session_id"] == session_id


def _open_to_everyone(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o666 if path.is_socket() else 0o755)


def _python_for_nobody() -> str:
    # The test's own interpreter may live under /root; the probe needs no project code.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            return candidate
    pytest.skip("no system python3 another user can run")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
async def test_a_peer_of_another_uid_is_refused() -> None:
    # Even if the socket were reachable (permissions loosened here on purpose),
    # SO_PEERCRED keeps another user out.
    base = Path(tempfile.mkdtemp(prefix="fieldlink-control-"))
    try:
        async with running(base / "state") as agent:
            await agent.open()
            _open_to_everyone(base, agent.state_dir, agent.path)
            probe = (
                "import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "try:\n"
                '    s.sendall(b\'{"op":"sessions"}\\n\')\n'
                "except OSError:\n"
                "    pass\n"  # refused before it was read: the answer is there all the same
                "sys.stdout.write(s.makefile().readline())\n"
            )
            child = await asyncio.create_subprocess_exec(
                _python_for_nobody(), "-I", "-c", probe, str(agent.path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                user=65534, group=65534, cwd="/",
            )  # fmt: skip
            out, err = await asyncio.wait_for(child.communicate(), 30)
            assert child.returncode == 0, err
            answer = json.loads(out)
            assert answer["ok"] is False
            assert answer["error"] == "forbidden"
            assert "session_id" not in out.decode()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# requests


async def test_sessions_approve_deny_and_end_act_on_the_controller(agent: Agent) -> None:
    approved = await agent.open(operator="alice", reason="toner jam")
    denied = await agent.open()
    listed = (await agent.ask("sessions"))["sessions"]
    assert [s["session_id"] for s in listed] == [approved, denied]
    assert listed[0]["operator"] == "alice"
    assert listed[0]["reason"] == "toner jam"
    assert listed[0]["state"] == "awaiting_consent"
    assert listed[0]["since"].endswith("Z")

    answer = await agent.ask("approve", approved)
    assert answer == {"ok": True, "session_id": approved, "state": "approved"}
    assert (await agent.ask("deny", denied))["state"] == "denied"
    await asyncio.sleep(0)
    for _ in range(500):
        if agent.dialed and len(agent.controller.sessions()) == 1:
            break
        await asyncio.sleep(0.01)
    [session] = agent.dialed
    assert [s.session_id for s in agent.controller.sessions()] == [approved]

    assert (await agent.ask("end", approved))["state"] == "closed"
    assert session.end_reasons == ["site_ended"]
    assert (await agent.ask("sessions"))["sessions"] == []


async def test_unknown_sessions_and_wrong_states_are_clear_errors(agent: Agent) -> None:
    with pytest.raises(NotFound, match="no session ses-nope on this device"):
        await agent.ask("approve", "ses-nope")
    with pytest.raises(NotFound):
        await agent.ask("end", "ses-nope")
    session_id = await agent.open()
    await agent.ask("approve", session_id)
    with pytest.raises(Conflict, match="not awaiting consent"):
        await agent.ask("deny", session_id)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"not json\n", "one line of JSON"),
        (b'{"op": "reboot"}\n', "op must be one of"),
        (b'{"op": "approve"}\n', "session_id is required"),
        (b"[1, 2]\n", "op must be one of"),
        (b"x" * 10_000 + b"\n", "too long"),
    ],
)
async def test_bad_requests_get_a_bad_request_answer(
    agent: Agent, data: bytes, detail: str
) -> None:
    answer = await raw(agent.path, data)
    assert answer["ok"] is False
    assert answer["error"] == "bad_request"
    assert detail in answer["detail"]


async def test_no_agent_running_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="the agent is not running"):
        await asyncio.to_thread(request, control_socket_path(tmp_path), "sessions")


def test_a_socket_of_another_user_is_a_permission_error(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root passes file permissions")
    path = control_socket_path(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    try:
        path.chmod(0)
        with pytest.raises(AuthError, match="permission denied"):
            request(path, "sessions")
    finally:
        listener.close()


# the command line


async def fieldlink(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def agent_toml(directory: Path, state_dir: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agent.toml"
    config.write_text(f'[agent]\ndevice_id = "{DEVICE}"\nstate_dir = "{state_dir}"\n')
    return config


async def test_cli_acts_on_the_running_agent_with_one_line_each(
    tmp_path: Path, agent: Agent
) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    code, out, err = await fieldlink("agent", "sessions", "--config", str(config))
    assert (code, out, err) == (0, "no remote sessions\n", "")

    session_id = await agent.open(operator="alice", reason="toner\x1b[2J jam")
    code, out, _ = await fieldlink("agent", "sessions", "--config", str(config))
    assert code == 0
    [line] = out.splitlines()
    assert session_id in line
    assert "awaiting_consent" in line
    assert "alice" in line
    assert "\x1b" not in line  # no terminal escapes from the server's text

    code, out, err = await fieldlink("agent", "approve", session_id, "--config", str(config))
    assert code == 0, err
    assert out == f"session {session_id} approved: the agent is connecting\n"

    code, out, err = await fieldlink("agent", "end", session_id, "--config", str(config))
    assert code == 0, err
    assert out == f"session {session_id} ended\n"


async def test_cli_deny_and_end_of_a_pending_session(tmp_path: Path, agent: Agent) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    denied = await agent.open()
    pending = await agent.open()
    code, out, _ = await fieldlink("agent", "deny", denied, "--config", str(config))
    assert (code, out) == (0, f"session {denied} denied\n")
    code, out, _ = await fieldlink("agent", "end", pending, "--config", str(config))
    assert (code, out) == (0, f"session {pending} denied (it was awaiting consent)\n")
    assert agent.dialed == []


async def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path, agent: Agent) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    unknown = f"ses-{new_id()}"
    code, out, err = await fieldlink("agent", "approve", unknown, "--config", str(config))
    assert code != 0
    assert out == ""
    assert err == f"error: no session {unknown} on this device\n"

    session_id = await agent.open()
    await agent.ask("approve", session_id)
    code, _, err = await fieldlink("agent", "deny", session_id, "--config", str(config))
    assert code != 0
    assert len(err.splitlines()) == 1
    assert "is not awaiting consent" in err

    stopped = agent_toml(tmp_path / "elsewhere", tmp_path / "no-agent-here")
    for args in (("end", unknown), ("sessions",)):
        code, out, err = await fieldlink("agent", *args, "--config", str(stopped))
        assert code != 0
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("error: the agent is not running")

    code, _, err = await fieldlink("agent", "end", "--config", str(config))
    assert code != 0
    assert "Traceback" not in err


async def test_footprint_names_the_agent_its_session_processes_and_what_it_loaded(
    agent: Agent,
) -> None:
    answer = await agent.ask("footprint")
    assert answer["pid"] == os.getpid()
    assert answer["session_processes"] == []
    assert answer["spare_process"] is None
    # This test process has loaded the SSH stack (other tests did): the answer says so.
    assert "asyncssh" in answer["loaded"]
    assert set(answer["loaded"]) <= {"asyncssh", "websockets", "cryptography", "pydantic"}
