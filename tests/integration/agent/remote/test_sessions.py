"""Remote sessions on the device: policy checks, consent, close, limits, and what is reported.

The controller is driven through its command handlers (and once through the
real dispatcher with a signed command). Sessions are :class:`ScriptedSession`
objects standing in for the SSH server, except in the last tests, where the
real :class:`agent.remote.sshd.AgentSession` dials a port nobody listens on.

The part of tests/unit/agent/remote/test_sessions.py that leaves the test's process
(its sessions run the real ssh client); the in-process rest stays there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from agent.remote.commands import (
    Outgoing,
)
from agent.remote.policy import SitePolicy
from agent.remote.sessions import SessionController
from shared.models import (
    DeviceEvent,
    SessionClosedReport,
    parse_message,
)
from tests.fixtures import waiting
from tests.fixtures.agent_sessions import open_body, request

DEVICE = "mfp-sessions-1"


async def eventually(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    return await waiting.eventually(predicate, within, interval=0.005)


def write_host_key(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_host_ed25519_key"
    path.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    path.chmod(0o600)
    return path


async def test_an_unreachable_server_closes_the_session_as_agent_unreachable(
    tmp_path: Path,
) -> None:
    published: list[Outgoing] = []
    controller = SessionController(
        DEVICE,
        SitePolicy(),
        host_key_path=write_host_key(tmp_path),
        publish=published.append,
        proxy=None,
        connect_timeout_s=5,
    )
    body = open_body()
    await controller.handle_open(request("session.open", body))
    await eventually(lambda: not controller.sessions())
    [event] = [parse_message(DeviceEvent, o.payload) for o in published]
    assert event.type == "session.closed"
    report = SessionClosedReport.model_validate(event.body)
    assert (report.session_id, report.close_reason) == (body["session_id"], "agent_unreachable")
    assert report.started_at is None


async def test_a_missing_host_key_closes_the_session_with_an_error(tmp_path: Path) -> None:
    published: list[Outgoing] = []
    controller = SessionController(
        DEVICE,
        SitePolicy(),
        host_key_path=tmp_path / "missing_key",
        publish=published.append,
        proxy=None,
    )
    await controller.handle_open(request("session.open", open_body()))
    await eventually(lambda: not controller.sessions())
    [event] = [parse_message(DeviceEvent, o.payload) for o in published]
    assert event.body["close_reason"] == "error"
    assert "host key" in event.body["detail"]
