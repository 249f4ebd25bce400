"""The agent's local control channel: a private Unix socket, its peer check, and the CLI over it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.remote.control import ControlError, ControlServer, control_socket_path, request
from shared.errors import AuthError, Conflict, NotFound, UnavailableError
from tests.fixtures.agent_control import (
    Agent,
    agent_fixture,  # noqa: F401 - the `agent` fixture
    running,
)


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
