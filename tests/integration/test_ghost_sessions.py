"""A server that dies leaves no ghost session (issue 11), and a graceful stop says why it closed.

Real parts: the TLS Mosquitto of `broker-config`, `fieldlink server run` processes killed with
SIGKILL, an enrolled agent with live tunnels, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.center import enrolled_agent, secure_center
from tests.fixtures.processes import ServerProcess, wait_until

#: A fast liveness for the test: a heartbeat every 0.3 s, dead after 2 s without one.
LIVENESS: dict[str, object] = {"instance_heartbeat_s": 0.3, "instance_dead_after_s": 2.0}


class Fleet:
    """One enrolled device with a running agent, and an operator's API access."""

    def __init__(self, server: ServerProcess, device_id: str) -> None:
        self.server = server
        self.device_id = device_id
        self.token = ""

    def login(self, server: ServerProcess) -> None:
        if not self.token:
            done = server.cli("user", "add", "olga", "--role", "operator", stdin="pw-12345678\n")
            assert done.returncode == 0, done.stderr
        answer = httpx.post(
            f"{server.url}/api/v1/auth/token",
            data={"username": "olga", "password": "pw-12345678"},
            timeout=10,
        )
        answer.raise_for_status()
        self.token = answer.json()["access_token"]

    def call(self, server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{server.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kwargs,
        )

    def open_active(self, server: ServerProcess) -> str:
        answer = self.call(
            server, "POST", f"/devices/{self.device_id}/sessions", json={"reason": "ghost test"}
        )
        assert answer.status_code == 201, answer.text
        sid = str(answer.json()["id"])
        ran = self.call(server, "POST", f"/sessions/{sid}/exec", json={"command": "echo up"})
        assert ran.status_code == 200, ran.text
        assert ran.json()["stdout"].strip() == "up"
        return sid

    def session(self, server: ServerProcess, sid: str) -> dict[str, Any]:
        answer = self.call(server, "GET", f"/sessions/{sid}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def close_entries(self, server: ServerProcess, sid: str) -> list[dict[str, Any]]:
        entries = server.api("GET", "/audit", params={"action": "session.close", "limit": 500})
        return [e for e in entries["items"] if e["details"].get("session_id") == sid]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'fieldlink.db'}"
    else:
        database_url = request.getfixturevalue("postgres_cluster").create_database()
    with (
        secure_center(tmp_path, database_url, **LIVENESS) as (server, _broker),
        enrolled_agent(
            server, tmp_path, "GH-1", contact_phone="+1 555 0142",
            policy={"consent": "none", "idle_timeout_s": 600},
        ) as (device_id, _agent, _device_dir),
    ):  # fmt: skip
        fleet = Fleet(server, device_id)
        fleet.login(server)
        yield fleet


def _assert_swept(fleet: Fleet, server: ServerProcess, sid: str) -> None:
    row = fleet.session(server, sid)
    assert row["state"] == "closed"
    assert row["close_reason"] == "server_restart"
    assert row["ended_at"] is not None
    entries = fleet.close_entries(server, sid)
    assert len(entries) == 1, entries
    assert entries[0]["details"]["close_reason"] == "server_restart"


def test_a_killed_server_leaves_no_ghost_session(fleet: Fleet) -> None:
    server = fleet.server
    # Both of the device's session slots are held by live tunnels of this process.
    ghosts = [fleet.open_active(server), fleet.open_active(server)]
    full = fleet.call(server, "POST", f"/devices/{fleet.device_id}/sessions", json={"reason": "x"})
    assert full.status_code == 409, full.text

    server.kill()  # SIGKILL: no shutdown code runs
    server.start()
    server.login_admin()
    fleet.login(server)

    # DELETE either closes the ghost or says why it cannot: never a 200 that leaves it open.
    answer = fleet.call(server, "DELETE", f"/sessions/{ghosts[0]}")
    if answer.status_code == 200:
        assert answer.json()["state"] == "closed", answer.text
    else:
        assert answer.status_code == 409, answer.text
        assert "held by server instance" in answer.json()["detail"]

    # The restarted server sees the dead instance's heartbeat stand still and sweeps it.
    for sid in ghosts:
        wait_until(lambda sid=sid: fleet.session(server, sid)["state"] == "closed", timeout=30)
        _assert_swept(fleet, server, sid)
    assert server.api("GET", "/audit/verify")["intact"] is True

    # Both slots are free again.
    fresh = [fleet.open_active(server), fleet.open_active(server)]
    for sid in fresh:
        closed = fleet.call(server, "DELETE", f"/sessions/{sid}")
        assert closed.status_code == 200, closed.text
        assert closed.json()["close_reason"] == "operator"


def test_a_graceful_restart_closes_sessions_as_server_restart(fleet: Fleet) -> None:
    server = fleet.server
    sid = fleet.open_active(server)
    server.stop()  # SIGTERM: the shutdown closes the live sessions
    server.start()
    server.login_admin()
    fleet.login(server)
    row = fleet.session(server, sid)
    assert row["state"] == "closed"
    assert row["close_reason"] == "server_restart"
    assert row["detail"] == "the server shut down"
    assert len(fleet.close_entries(server, sid)) == 1


def _second_server(fleet: Fleet, tmp_path: Path) -> ServerProcess:
    """Another `fieldlink server run` on the same database, broker and CA."""
    config = fleet.server.config.read_text()
    values = {
        key: json.loads(value)
        for key, value in (line.split(" = ", 1) for line in config.splitlines() if " = " in line)
        if value.startswith('"')
    }
    other_dir = tmp_path / "second"
    other_dir.mkdir()
    return ServerProcess(
        other_dir,
        values["database_url"],
        values["broker_url"],
        state_dir=values["state_dir"],
        broker_ca=values["broker_ca"],
        broker_cert=values["broker_cert"],
        broker_key=values["broker_key"],
        **LIVENESS,
    )


def test_closing_a_session_another_live_server_holds(fleet: Fleet, tmp_path: Path) -> None:
    first = fleet.server
    sid = fleet.open_active(first)
    with _second_server(fleet, tmp_path) as second:
        fleet.login(second)
        answer = fleet.call(second, "DELETE", f"/sessions/{sid}")
        # The agent is told to end it; the holder records the close, once.
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "closed"
        assert answer.json()["close_reason"] == "operator"
        assert len(fleet.close_entries(second, sid)) == 1


def test_another_server_sweeps_the_sessions_of_one_that_died(fleet: Fleet, tmp_path: Path) -> None:
    first = fleet.server
    second = _second_server(fleet, tmp_path)
    # The session's tunnel is held by the first process. (It is opened before the second
    # starts: command results reach whichever process the broker's shared subscription
    # picks, so a session opened on one of two processes may miss its open result.)
    sid = fleet.open_active(first)
    holder = fleet.session(first, sid)["instance"]
    with second:
        fleet.login(second)
        first.kill()
        wait_until(lambda: fleet.session(second, sid)["state"] == "closed", timeout=30)
        _assert_swept(fleet, second, sid)
        entry = fleet.close_entries(second, sid)[0]
        assert entry["details"]["instance"] == holder
        assert entry["details"]["closed_by"] != holder
        # A DELETE now changes nothing: one close, one audit entry.
        again = fleet.call(second, "DELETE", f"/sessions/{sid}")
        assert again.status_code == 200, again.text
        assert again.json()["close_reason"] == "server_restart"
        assert len(fleet.close_entries(second, sid)) == 1
        assert second.api("GET", "/audit/verify")["intact"] is True
