"""Remote sessions end to end: the real server, a TLS Mosquitto, a real enrolled agent.

The operator's side goes through the public API only: open a session with a
reason, run a command, drive the browser-terminal socket, forward to the
device's ``web`` service, be refused a service outside the allowlist, close,
and download a recording that is valid asciicast v2 and whose SHA-256 is in
the audit log. Refusals on the server's side (unknown or revoked device, no
reason, another operator's session, a reused tunnel token) are checked too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared.wire import WS_SESSION_CLOSED
from tests.fixtures.center import enroll_agent, enrolled_agent, secure_center
from tests.fixtures.processes import AgentProcess, ServerProcess, site_command, wait_until
from tests.fixtures.proxy import HttpProxy
from tests.fixtures.session_sockets import WatchedTerminal, close_code, escalated_incident
from tests.fixtures.web_panel import PAGE

pytestmark = pytest.mark.integration


async def _drain(socket: Any, timeout_s: float = 10) -> tuple[bytes, list[dict[str, Any]], Any]:
    """Read a socket until the server closes it: bytes, control messages, the close frame."""
    data = b""
    controls: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                message = await socket.recv()
            except ConnectionClosed as closed:
                return data, controls, closed.rcvd
            if isinstance(message, str):
                controls.append(json.loads(message))
            else:
                data += message


@pytest.fixture(scope="module")
def counter() -> Iterator[int]:
    """A service that reads to EOF, then answers with the number of bytes it read."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                total = 0
                while data := conn.recv(1 << 16):
                    total += len(data)
                conn.sendall(f"{total}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.close()


class Center:
    """The server, and an operator's API access."""

    def __init__(self, server: ServerProcess, device_id: str, agent: AgentProcess) -> None:
        self.server = server
        self.device_id = device_id
        self.agent = agent
        self.tokens: dict[str, str] = {}

    def token(self, username: str, role: str = "operator") -> str:
        if username not in self.tokens:
            done = self.server.cli("user", "add", username, "--role", role, stdin="pw-12345678\n")
            assert done.returncode == 0, done.stderr
            answer = httpx.post(
                f"{self.server.url}/api/v1/auth/token",
                data={"username": username, "password": "pw-12345678"},
                timeout=10,
            )
            answer.raise_for_status()
            self.tokens[username] = answer.json()["access_token"]
        return self.tokens[username]

    def call(self, method: str, path: str, user: str = "olga", **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.server.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=60,
            **kwargs,
        )

    def open(self, reason: str = "toner error on the phone", **body: Any) -> dict[str, Any]:
        answer = self.call(
            "POST", f"/devices/{self.device_id}/sessions", json={"reason": reason, **body}
        )
        assert answer.status_code == 201, answer.text
        session: dict[str, Any] = answer.json()
        return session

    def session(self, session_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/sessions/{session_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait_state(
        self, session_id: str, *states: str, timeout: float = 30, max_interval: float = 0.5
    ) -> dict[str, Any]:
        wait_until(
            lambda: self.session(session_id)["state"] in states,
            timeout=timeout,
            max_interval=max_interval,
        )
        return self.session(session_id)

    def ws_url(self, path: str) -> str:
        return self.server.url.replace("http://", "ws://") + "/api/v1" + path


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])]
)
def center(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    web_panel: int,
    counter: int,
) -> Iterator[Center]:
    tmp_path = tmp_path_factory.mktemp("sessions")
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'fieldlink.db'}"
    else:
        database_url = request.getfixturevalue("postgres_cluster").create_database()
    files = tmp_path / "device-files"
    files.mkdir()
    (files / "printer.log").write_text("jam at tray 2\n")
    with (
        secure_center(tmp_path, database_url) as (server, _broker),
        enrolled_agent(
            server, tmp_path, "SE-1", contact_phone="+1 555 0142",
            services={"web": f"127.0.0.1:{web_panel}", "count": f"127.0.0.1:{counter}",
                      "vnc": "127.0.0.1:1"},
            policy={"services": ["web", "count"], "consent": "none",
                    "sftp_folders": {"files": str(files)}, "idle_timeout_s": 600},
        ) as (device_id, agent, _device_dir),
    ):  # fmt: skip
        yield Center(server, device_id, agent)


def test_exec_in_a_session_returns_the_commands_output(center: Center) -> None:
    opened = center.open(reason="paper jam, customer on the phone")
    assert opened["state"] in ("requested", "connecting", "active")
    assert opened["operator"] == "olga"
    sid = opened["id"]
    ran = center.call("POST", f"/sessions/{sid}/exec", json={"command": "echo hi-$((6*7))"})
    assert ran.status_code == 200, ran.text
    assert ran.json() == {"exit_status": 0, "stdout": "hi-42\n", "stderr": ""}
    failed = center.call("POST", f"/sessions/{sid}/exec", json={"command": "echo oops >&2; exit 3"})
    assert failed.json() == {"exit_status": 3, "stdout": "", "stderr": "oops\n"}
    assert center.session(sid)["state"] == "active"

    started = time.monotonic()
    closed = center.call("DELETE", f"/sessions/{sid}")
    assert closed.status_code == 200
    assert time.monotonic() - started < 2.0
    row = closed.json()
    assert row["state"] == "closed"
    assert row["close_reason"] == "operator"
    assert row["services_used"] == ["exec"]
    assert row["bytes_to_device"] > 0
    assert row["bytes_from_device"] > 0
    assert row["started_at"] is not None
    assert row["ended_at"] is not None
    # The agent's own report arrives over MQTT and is kept on the session.
    wait_until(
        lambda: (
            center.server.api("GET", "/audit", params={"action": "session.close"})["count"] >= 1
        ),
        timeout=10,
    )
    audit = center.server.api("GET", "/audit", params={"action": "session.exec"})["items"]
    assert any(entry["details"]["command"] == "echo hi-$((6*7))" for entry in audit)
    metrics = httpx.get(f"{center.server.url}/metrics", timeout=10).text
    assert 'fieldlink_sessions_closed_total{close_reason="operator"}' in metrics
    assert "fieldlink_session_setup_seconds_count" in metrics


async def _terminal(center: Center, sid: str) -> tuple[bytes, list[dict[str, Any]]]:
    token = center.token("olga")
    output = b""
    controls: list[dict[str, Any]] = []
    async with connect(
        center.ws_url(f"/sessions/{sid}/terminal?cols=100&rows=30"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as socket:

        async def until(needle: bytes) -> None:
            nonlocal output
            try:
                async with asyncio.timeout(20):
                    while needle not in output:
                        message = await socket.recv()
                        if isinstance(message, str):
                            controls.append(json.loads(message))
                        else:
                            output += message
            except TimeoutError:
                pytest.fail(f"{needle!r} not in the terminal's output: {output[-300:]!r}")

        await until(b"")  # nothing needed yet: the socket is up
        await socket.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        await socket.send(b"echo hello-$((40+2)); echo \xc3\xa9t\xc3\xa9\n")
        await until(b"hello-42")
        await until("été".encode())
        await socket.send(b"sleep 30\n")
        await asyncio.sleep(0.5)
        await socket.send(b"\x03")  # Ctrl-C interrupts the sleep
        await socket.send(b"echo after-$((1+1))\n")
        await until(b"after-2")
        await socket.send(b"stty size\n")
        await until(b"40 120")
        await socket.send(b"exit\n")
        rest, more, _frame = await _drain(socket)
    return output + rest, controls + more


def test_the_browser_terminal_runs_a_shell_and_is_recorded(center: Center) -> None:
    sid = center.open(reason="check the spooler")["id"]
    output, controls = asyncio.run(_terminal(center, sid))
    assert b"hello-42" in output
    assert {"type": "exit", "exit_status": 0} in controls
    assert any(c.get("state") == "active" for c in controls)

    closed = center.call("DELETE", f"/sessions/{sid}").json()
    assert closed["close_reason"] == "operator"
    assert "shell" in closed["services_used"]
    assert closed["has_recording"] is True
    recording = center.call("GET", f"/sessions/{sid}/recording")
    assert recording.status_code == 200
    assert recording.headers["content-type"].startswith("application/x-asciicast")
    lines = recording.text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (100, 30)
    events = [json.loads(line) for line in lines[1:]]
    assert all(len(e) == 3 and e[1] in ("o", "r", "m") for e in events)
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    shown = "".join(e[2] for e in events if e[1] == "o")
    assert "hello-42" in shown
    assert "été" in shown
    assert [120, 40] in ([int(x) for x in e[2].split("x")] for e in events if e[1] == "r")
    digest = hashlib.sha256(recording.content).hexdigest()
    assert closed["recording_sha256"] == digest
    entries = center.server.api("GET", "/audit", params={"action": "session.close"})["items"]
    assert any(
        e["details"]["session_id"] == sid and e["details"]["recording_sha256"] == digest
        for e in entries
    )


async def _forward(center: Center, sid: str, service: str) -> bytes:
    token = center.token("olga")
    async with connect(
        center.ws_url(f"/sessions/{sid}/forward/{service}"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as socket:
        state = json.loads(await socket.recv())
        assert state == {"type": "state", "state": "active"}
        await socket.send(b"GET / HTTP/1.0\r\nHost: panel\r\n\r\n")
        body, controls, _frame = await _drain(socket)
    assert controls == []
    return body


async def _refused_forward(center: Center, sid: str, service: str) -> tuple[int, str]:
    token = center.token("olga")
    async with connect(
        center.ws_url(f"/sessions/{sid}/forward/{service}"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as socket:
        _data, _controls, frame = await _drain(socket)
    assert frame is not None
    return int(frame.code), str(frame.reason)


def test_a_forward_reaches_the_allowlisted_web_panel_and_nothing_else(center: Center) -> None:
    sid = center.open(reason="web panel settings")["id"]
    center.wait_state(sid, "active")
    wait_until(lambda: center.session(sid)["allowed_services"] is not None, timeout=10)
    assert center.session(sid)["allowed_services"] == ["count", "web"]
    body = asyncio.run(_forward(center, sid, "web"))
    assert body.startswith(b"HTTP/1.0 200")
    assert body.endswith(PAGE)
    # vnc exists on the device but the site's policy does not allow it; ssh does not exist.
    for service in ("vnc", "ssh"):
        code, reason = asyncio.run(_refused_forward(center, sid, service))
        assert code == 4403
        assert service in reason
    closed = center.call("DELETE", f"/sessions/{sid}").json()
    assert "forward:web" in closed["services_used"]
    assert "forward:vnc" not in closed["services_used"]

    def refusals() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = center.session(sid)["refusals"]
        return items

    wait_until(lambda: len(refusals()) >= 2, timeout=10)
    assert {r["kind"] for r in refusals()} == {"forward"}


async def _count_through_forward(center: Center, sid: str, payload: bytes) -> bytes:
    token = center.token("olga")
    async with connect(
        center.ws_url(f"/sessions/{sid}/forward/count"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as socket:
        while json.loads(await socket.recv()) != {"type": "state", "state": "active"}:
            pass  # requested, connecting...
        for start in range(0, len(payload), 256 * 1024):
            await socket.send(payload[start : start + 256 * 1024])
        await socket.send(json.dumps({"type": "eof"}))  # half-close: the answer still comes
        answer, controls, frame = await _drain(socket, timeout_s=30)
    assert controls == []
    assert frame is not None
    assert frame.code == 1000
    return answer


def test_a_forward_half_closes_and_still_gets_the_answer(center: Center) -> None:
    sid = center.open(reason="upload a log")["id"]
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB
    assert asyncio.run(_count_through_forward(center, sid, payload)) == b"%d\n" % len(payload)
    center.call("DELETE", f"/sessions/{sid}")


def test_a_session_may_ask_only_for_services_the_site_allows(center: Center) -> None:
    opened = center.open(reason="vnc please", services=["vnc"])
    closed = center.wait_state(opened["id"], "closed")
    assert closed["close_reason"] == "site_denied"
    assert "not_allowed" in (closed["detail"] or "")


def test_server_side_refusals(center: Center) -> None:
    unknown = center.call("POST", "/devices/mfp-nope/sessions", json={"reason": "x"})
    assert unknown.status_code == 404
    no_reason = center.call("POST", f"/devices/{center.device_id}/sessions", json={"reason": "   "})
    assert no_reason.status_code == 422
    assert "reason" in no_reason.json()["detail"]
    anonymous = httpx.post(
        f"{center.server.url}/api/v1/devices/{center.device_id}/sessions",
        json={"reason": "x"},
        timeout=10,
    )
    assert anonymous.status_code == 401

    # Another operator may not use or close olga's session.
    sid = center.open(reason="mine")["id"]
    center.wait_state(sid, "active")
    other = center.call("POST", f"/sessions/{sid}/exec", user="piet", json={"command": "id"})
    assert other.status_code == 403
    assert center.call("DELETE", f"/sessions/{sid}", user="piet").status_code == 403

    other_terminal = close_code(center.ws_url(f"/sessions/{sid}/terminal"), center.token("piet"))
    assert asyncio.run(other_terminal) == 4403

    # The tunnel endpoint accepts a session's token once: a second dial is refused.
    async def dial_again() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                center.ws_url(f"/tunnel/{sid}"),
                additional_headers={"Authorization": "Bearer not-the-token-of-this-session"},
            ):
                pass
        return refused.value.response.status_code

    assert asyncio.run(dial_again()) == 403
    closed = center.call("DELETE", f"/sessions/{sid}").json()
    assert closed["close_reason"] == "operator"
    again = center.call("POST", f"/sessions/{sid}/exec", json={"command": "id"})
    assert again.status_code == 409


def test_sessions_per_device_are_limited(center: Center) -> None:
    first = center.open(reason="one")["id"]
    second = center.open(reason="two")["id"]
    third = center.call("POST", f"/devices/{center.device_id}/sessions", json={"reason": "three"})
    assert third.status_code == 409
    assert "limit" in third.json()["detail"]
    for sid in (first, second):
        assert center.call("DELETE", f"/sessions/{sid}").json()["state"] == "closed"
    listed = center.call("GET", "/sessions", params={"device_id": center.device_id}).json()
    assert listed["count"] >= 2
    assert all(item["state"] == "closed" for item in listed["items"])
    detail = center.server.device(center.device_id)
    assert {s["id"] for s in detail["sessions"]} >= {first, second}


class SiteDevice:
    """A second device whose site wants to approve each session, with short limits."""

    def __init__(self, center: Center, device_id: str, config: Path, state_dir: Path) -> None:
        self.center = center
        self.device_id = device_id
        self.config = config
        self.state_dir = state_dir

    def site(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``fieldlink agent ...`` on the device (the site's panel)."""
        return site_command(self.config, self.state_dir, *args)

    def open(self, reason: str = "site approval please") -> str:
        answer = self.center.call(
            "POST", f"/devices/{self.device_id}/sessions", json={"reason": reason}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


@pytest.fixture(scope="module")
def site_device(center: Center, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteDevice]:
    tmp_path = tmp_path_factory.mktemp("site")
    server = center.server
    with enrolled_agent(
        server, tmp_path, "CT-9", model="Aquilion", device_type="imaging",
        customer="St. Mary", profile="imaging", fast_reconnect=False,
        policy={"consent": "required", "approval_timeout_s": 10,
                "idle_timeout_s": 3, "max_duration_s": 8},
    ) as (device_id, agent, _device_dir):  # fmt: skip
        yield SiteDevice(center, device_id, agent.config, tmp_path / "agent-state")


def test_the_site_approves_then_ends_a_session(center: Center, site_device: SiteDevice) -> None:
    sid = site_device.open()
    waiting = center.wait_state(sid, "awaiting_consent", timeout=15)
    assert waiting["started_at"] is None
    listed = site_device.site("sessions")
    assert sid in listed.stdout, listed.stderr
    assert "olga" in listed.stdout
    approved = site_device.site("approve", sid)
    assert approved.returncode == 0, approved.stderr
    center.wait_state(sid, "active", timeout=15)
    ran = center.call("POST", f"/sessions/{sid}/exec", json={"command": "echo approved"})
    assert ran.json()["stdout"] == "approved\n"
    started = time.monotonic()
    ended = site_device.site("end", sid)
    assert ended.returncode == 0, ended.stderr
    closed = center.wait_state(sid, "closed", timeout=5, max_interval=0.05)  # timed: finely
    assert time.monotonic() - started < 2.5
    assert closed["close_reason"] == "site_ended"


def test_the_site_denies_or_does_not_answer(center: Center, site_device: SiteDevice) -> None:
    denied_id = site_device.open(reason="deny me")
    center.wait_state(denied_id, "awaiting_consent", timeout=15)
    denied = site_device.site("deny", denied_id)
    assert denied.returncode == 0, denied.stderr
    closed = center.wait_state(denied_id, "closed", timeout=10)
    assert closed["close_reason"] == "site_denied"
    assert "denied" in closed["detail"]
    assert closed["started_at"] is None

    ignored_id = site_device.open(reason="nobody is there")
    center.wait_state(ignored_id, "awaiting_consent", timeout=15)
    closed = center.wait_state(ignored_id, "closed", timeout=30)  # approval_timeout_s 10
    assert closed["close_reason"] == "site_denied"
    assert "timeout" in closed["detail"]


def test_idle_and_maximum_duration_close_sessions(center: Center, site_device: SiteDevice) -> None:
    idle_id = site_device.open(reason="idle")
    center.wait_state(idle_id, "awaiting_consent", timeout=15)
    assert site_device.site("approve", idle_id).returncode == 0
    center.wait_state(idle_id, "active", timeout=15)
    closed = center.wait_state(idle_id, "closed", timeout=10)  # idle_timeout_s 3
    assert closed["close_reason"] == "idle_timeout"

    busy_id = site_device.open(reason="long job")
    center.wait_state(busy_id, "awaiting_consent", timeout=15)
    assert site_device.site("approve", busy_id).returncode == 0
    center.wait_state(busy_id, "active", timeout=15)
    started = time.monotonic()
    while time.monotonic() - started < 20:
        ran = center.call("POST", f"/sessions/{busy_id}/exec", json={"command": "sleep 1"})
        if ran.status_code != 200:
            break
    closed = center.wait_state(busy_id, "closed", timeout=5)
    assert closed["close_reason"] == "max_duration"  # max_duration_s 8, never idle


def test_a_session_opened_for_an_incident_is_linked_to_it(center: Center) -> None:
    incident = center.call(
        "POST", "/incidents",
        json={"device_id": center.device_id, "channel": "phone", "symptom": "paper jam",
              "opened_at": "2026-11-23T10:00:00Z"},
    )  # fmt: skip
    assert incident.status_code == 201, incident.text
    incident_id = incident.json()["id"]
    sid = center.open(reason="incident", incident_id=incident_id)["id"]
    center.call("DELETE", f"/sessions/{sid}")
    linked = center.call("GET", f"/incidents/{incident_id}").json()
    assert linked["remote_session_used"] is True
    assert sid in linked["session_ids"]
    unknown = center.call(
        "POST", f"/devices/{center.device_id}/sessions", json={"reason": "x", "incident_id": 999999}
    )
    assert unknown.status_code == 404


def test_the_tunnel_goes_through_the_sites_http_proxy(
    center: Center, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp_path = tmp_path_factory.mktemp("proxied")
    server = center.server
    registered = server.api(
        "POST", "/devices",
        json={"serial": "PX-3", "model": "PowerEdge", "type": "server", "customer": "Acme"},
    )  # fmt: skip
    device_id, token = registered["device"]["id"], registered["enrollment_token"]
    device_dir = tmp_path / "device"
    assert enroll_agent(server, token, device_dir).returncode == 0
    with HttpProxy() as proxy:
        agent = AgentProcess(tmp_path, device_id, "unused")
        agent.config = device_dir / "agent.toml"
        agent._spawn(
            [sys.executable, "-m", "shared", "agent", "run", "--config", str(agent.config)],
            FIELDLINK_INTERVAL_S="1", FIELDLINK_STATE_DIR=str(tmp_path / "agent-state"),
            FIELDLINK_PROFILE="server", FIELDLINK_SIMULATE="true",
            FIELDLINK_TUNNEL_PROXY=proxy.url,
        )  # fmt: skip
        try:
            wait_until(lambda: server.device(device_id)["online"], timeout=30)
            answer = center.call(
                "POST", f"/devices/{device_id}/sessions", json={"reason": "behind a proxy"}
            )
            sid = answer.json()["id"]
            ran = center.call("POST", f"/sessions/{sid}/exec", json={"command": "echo proxied"})
            assert ran.json()["stdout"] == "proxied\n", ran.text
            center.call("DELETE", f"/sessions/{sid}")
        finally:
            agent.stop()
        # The device dialed the server only through the proxy (MQTT is not proxied).
        assert f"127.0.0.1:{server.port}" in proxy.log()
        assert "CONNECT" in proxy.log()


def test_a_device_without_a_pinned_host_key_gets_no_session(center: Center) -> None:
    registered = center.server.api(
        "POST", "/devices",
        json={"serial": "RV-1", "model": "X", "type": "server", "customer": "Acme"},
    )  # fmt: skip
    device_id = registered["device"]["id"]
    # Registered but never enrolled: no pinned host key yet.
    not_enrolled = center.call("POST", f"/devices/{device_id}/sessions", json={"reason": "x"})
    assert not_enrolled.status_code == 409
    assert "host key" in not_enrolled.json()["detail"]


async def _terminal_until_closed(
    center: Center, sid: str, token: str, act: Any
) -> tuple[list[dict[str, Any]], Any, float]:
    """A live browser terminal; ``act()`` withdraws access; what the socket got, and how fast."""
    async with connect(
        center.ws_url(f"/sessions/{sid}/terminal"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as socket:
        output = b""
        async with asyncio.timeout(30):
            await socket.send(b"echo live-$((6*7))\n")
            while b"live-42" not in output:
                message = await socket.recv()
                if isinstance(message, bytes):
                    output += message
        started = time.monotonic()
        await asyncio.to_thread(act)
        _data, controls, frame = await _drain(socket, timeout_s=30)
        return controls, frame, time.monotonic() - started


def test_disabling_a_user_ends_their_browser_terminal_as_access_revoked(center: Center) -> None:
    token = center.token("dave")
    opened = center.call(
        "POST", f"/devices/{center.device_id}/sessions", user="dave", json={"reason": "dave's"}
    )
    assert opened.status_code == 201, opened.text
    sid = opened.json()["id"]

    def state() -> str:
        found: str = center.server.api("GET", f"/sessions/{sid}")["state"]
        return found

    wait_until(lambda: state() == "active", timeout=30)

    def disable() -> None:
        done = center.server.cli("user", "disable", "dave")  # another process: the CLI
        assert done.returncode == 0, done.stderr

    controls, frame, elapsed = asyncio.run(_terminal_until_closed(center, sid, token, disable))
    assert elapsed < 20  # within seconds (the watch re-checks every 2 s), not at the 4 h cap
    assert frame is not None
    assert frame.reason == "access_revoked"
    assert any(c.get("close_reason") == "access_revoked" for c in controls)
    closed = center.server.api("GET", f"/sessions/{sid}")
    assert (closed["state"], closed["close_reason"]) == ("closed", "access_revoked")
    entries = center.server.api("GET", "/audit", params={"action": "session.close"})["items"]
    (entry,) = [e for e in entries if e["details"]["session_id"] == sid]
    assert entry["details"]["close_reason"] == "access_revoked"
    assert "disabled" in entry["details"]["detail"]


def test_narrowing_a_users_scope_ends_their_session_on_a_device_now_outside(
    center: Center,
) -> None:
    token = center.token("sven")
    opened = center.call(
        "POST", f"/devices/{center.device_id}/sessions", user="sven", json={"reason": "sven's"}
    )
    assert opened.status_code == 201, opened.text
    sid = opened.json()["id"]
    wait_until(lambda: center.server.api("GET", f"/sessions/{sid}")["state"] == "active", 30)
    center.server.api("POST", "/customers", json={"number": "C-ELSE", "name": "Someone else"})

    def narrow() -> None:  # another process: the CLI
        done = center.server.cli("user", "scope", "sven", "--customers", "C-ELSE")
        assert done.returncode == 0, done.stderr

    controls, frame, _elapsed = asyncio.run(_terminal_until_closed(center, sid, token, narrow))
    assert frame is not None
    assert frame.reason == "access_revoked"
    assert any(c.get("close_reason") == "access_revoked" for c in controls)
    closed = center.server.api("GET", f"/sessions/{sid}")
    assert (closed["state"], closed["close_reason"]) == ("closed", "access_revoked")
    entries = center.server.api("GET", "/audit", params={"action": "session.close"})["items"]
    (entry,) = [e for e in entries if e["details"]["session_id"] == sid]
    assert "no longer in the user's scope" in entry["details"]["detail"]


def test_logging_out_ends_the_terminal_opened_with_that_token(center: Center) -> None:
    sid = center.open(reason="two windows")["id"]
    center.wait_state(sid, "active")
    answer = httpx.post(
        f"{center.server.url}/api/v1/auth/token",
        data={"username": "olga", "password": "pw-12345678"},
        timeout=10,
    )
    second = answer.json()["access_token"]

    def logout() -> None:
        done = httpx.post(
            f"{center.server.url}/api/v1/auth/logout",
            headers={"Authorization": f"Bearer {second}"},
            timeout=10,
        )
        assert done.status_code == 204

    controls, frame, _elapsed = asyncio.run(_terminal_until_closed(center, sid, second, logout))
    assert frame is not None
    assert (frame.code, frame.reason) == (4403, "access_revoked")
    assert any(c.get("close_reason") == "access_revoked" for c in controls)
    # The session itself (and olga's other login) goes on.
    assert center.session(sid)["state"] == "active"
    revoked = center.server.api("GET", "/audit", params={"action": "session.channel_revoked"})[
        "items"
    ]
    assert any(e["details"]["session_id"] == sid for e in revoked)
    assert center.call("DELETE", f"/sessions/{sid}").json()["close_reason"] == "operator"


def test_demoting_an_admin_ends_their_terminal_on_anothers_session(center: Center) -> None:
    """An admin may use any operator's session; demoted, their socket ends, the session not."""
    sid = center.open(reason="olga's, watched by ada")["id"]
    center.wait_state(sid, "active")
    token = center.token("ada", role="admin")

    def demote() -> None:
        done = center.server.cli("user", "role", "ada", "operator")
        assert done.returncode == 0, done.stderr

    controls, frame, _elapsed = asyncio.run(_terminal_until_closed(center, sid, token, demote))
    assert frame is not None
    assert (frame.code, frame.reason) == (4403, "access_revoked")
    assert any("admin role" in (c.get("detail") or "") for c in controls)
    assert center.session(sid)["state"] == "active"
    assert center.call("DELETE", f"/sessions/{sid}").json()["close_reason"] == "operator"


async def _observed_terminal(
    center: Center, sid: str, marker: Path
) -> tuple[bytes, list[dict[str, Any]], bytes, list[dict[str, Any]], int]:
    """Olga's terminal, watched by sara (the incident's assignee) and refused to piet."""
    watched = WatchedTerminal()
    read = watched.read
    async with connect(
        center.ws_url(f"/sessions/{sid}/terminal"),
        additional_headers={"Authorization": f"Bearer {center.token('olga')}"},
    ) as terminal:
        await read(terminal, {"type": "state", "state": "active"}, owner=True)
        refused_code = await close_code(
            center.ws_url(f"/sessions/{sid}/observe"), center.token("piet")
        )
        async with connect(
            center.ws_url(f"/sessions/{sid}/observe"),
            additional_headers={"Authorization": f"Bearer {center.token('sara')}"},
        ) as observer:
            await read(observer, {"type": "state", "state": "observing", "owner": "olga"}, False)
            joined = {"type": "observer", "event": "join", "user": "sara"}
            await read(terminal, joined, owner=True)
            await terminal.send(b"echo owner-$((6*7))\n")
            await read(observer, b"owner-42", owner=False)
            # the observer types: refused, never reaches the shell
            await observer.send(f"echo typed > {marker}\n".encode())
            await observer.send(json.dumps({"type": "input", "data": f"touch {marker}\n"}))
            refusal = {"type": "error", "detail": "observers cannot type"}
            await read(observer, refusal, owner=False)
            # An admin observing too is disabled: the access check it triggers ends that
            # observer's socket, and in the same pass keeps sara's (she needs only operator).
            async with connect(
                center.ws_url(f"/sessions/{sid}/observe"),
                additional_headers={"Authorization": f"Bearer {center.token('odin', 'admin')}"},
            ) as admin:
                await read(admin, {"type": "state", "state": "observing", "owner": "olga"}, False)
                disabled = await asyncio.to_thread(
                    center.call, "PATCH", "/users/odin", user="adele", json={"disabled": True}
                )
                assert disabled.status_code == 200, disabled.text
                _data, _controls, frame = await _drain(admin, timeout_s=20)
                assert frame is not None
                assert (frame.code, frame.reason) == (4403, "access_revoked")
            await terminal.send(b"echo still-$((1+1))\n")
            await read(observer, b"still-2", owner=False)
        await read(terminal, {"type": "observer", "event": "leave", "user": "sara"}, owner=True)
        await terminal.send(b"exit\n")
        rest, more, _frame = await _drain(terminal)
    return (
        watched.owner_out + rest,
        watched.owner_controls + more,
        watched.seen,
        watched.observer_controls,
        refused_code,
    )


def test_the_incidents_specialist_observes_a_live_terminal_read_only(
    center: Center, tmp_path: Path
) -> None:
    center.token("sara")
    center.token("piet")
    center.token("adele", "admin")
    center.token("odin", "admin")
    incident_id = escalated_incident(
        center.call,
        center.device_id,
        symptom="fuser noise",
        opened_at="2026-11-23T10:00:00Z",
        note="please watch the next reset",
    )
    sid = center.open(reason="incident", incident_id=incident_id)["id"]
    center.wait_state(sid, "active")
    marker = tmp_path / "observer-typed"
    try:
        owner_out, owner_controls, seen, observer_controls, refused = asyncio.run(
            _observed_terminal(center, sid, marker)
        )
    finally:
        center.call("DELETE", f"/sessions/{sid}")
    assert refused == 4403
    assert b"owner-42" in owner_out
    assert b"owner-42" in seen
    assert not marker.exists()
    assert b"observer-typed" not in owner_out
    assert marker.name.encode() not in owner_out
    assert {"type": "exit", "exit_status": 0} in owner_controls
    actions = [
        (e["actor"], e["action"])
        for e in center.server.api("GET", "/audit", params={"target": center.device_id})["items"]
        if e["action"].startswith("session.observe")
        and e["details"]["session_id"] == sid
        and e["actor"] == "sara"
    ]
    assert sorted(actions) == [("sara", "session.observe_join"), ("sara", "session.observe_leave")]
    assert observer_controls[0] == {"type": "state", "state": "observing", "owner": "olga"}

    # an admin may observe, but a closed session has nothing to show
    admin_observes = close_code(
        center.ws_url(f"/sessions/{sid}/observe"), center.token("adele", "admin")
    )
    assert asyncio.run(admin_observes) == WS_SESSION_CLOSED


async def _observer_takes_part(center: Center, sid: str) -> tuple[bytes, list[dict[str, Any]]]:
    """Olga lets sara type in her terminal, then takes the keyboard back."""
    watched = WatchedTerminal()
    read = watched.read

    def grant(method: str, user: str = "olga", who: str = "sara") -> httpx.Response:
        return center.call(method, f"/sessions/{sid}/observers/{who}/allow-input", user=user)

    refusal = {"type": "error", "detail": "observers cannot type"}
    async with connect(
        center.ws_url(f"/sessions/{sid}/terminal"),
        additional_headers={"Authorization": f"Bearer {center.token('olga')}"},
    ) as terminal:
        await read(terminal, {"type": "state", "state": "active"}, owner=True)
        # nobody watching yet: nothing to allow
        assert (await asyncio.to_thread(grant, "POST")).status_code == 409
        async with connect(
            center.ws_url(f"/sessions/{sid}/observe"),
            additional_headers={"Authorization": f"Bearer {center.token('sara')}"},
        ) as observer:
            await read(terminal, {"type": "observer", "event": "join", "user": "sara"}, True)
            # only the owner may hand over the keyboard: not sara herself, not piet, not an admin
            for someone in ("sara", "piet", "adele"):
                refused = await asyncio.to_thread(grant, "POST", someone)
                assert refused.status_code == 403, refused.text
            await observer.send(b"echo before-$((1+1))\n")
            await read(observer, refusal, owner=False)
            allowed = await asyncio.to_thread(grant, "POST")
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["typists"] == ["sara"]
            granted = {"type": "observer", "event": "input_allowed", "user": "sara", "by": "olga"}
            await read(observer, granted, owner=False)
            await read(terminal, granted, owner=True)
            await observer.send(b"echo sara-$((6*7))\n")
            await read(terminal, b"sara-42", owner=True)
            await read(terminal, {"type": "observer", "event": "typing", "user": "sara"}, True)
            await observer.send(json.dumps({"type": "input", "data": "echo again-$((2+3))\n"}))
            await read(terminal, b"again-5", owner=True)
            revoked = await asyncio.to_thread(grant, "DELETE")
            assert revoked.status_code == 200, revoked.text
            assert revoked.json()["typists"] == []
            taken = {"type": "observer", "event": "input_revoked", "user": "sara", "by": "olga"}
            await read(observer, taken, owner=False)
            watched.observer_controls.remove(refusal)
            await observer.send(b"echo after-$((3+3))\n")
            await read(observer, refusal, owner=False)
            assert (await asyncio.to_thread(grant, "DELETE")).status_code == 409
        await terminal.send(b"echo owner-done\n")
        await read(terminal, b"owner-done", owner=True)
        await terminal.send(b"exit\n")
        rest, _more, _frame = await _drain(terminal)
    return watched.owner_out + rest, watched.owner_controls


def test_the_owner_lets_an_observer_type_and_takes_the_keyboard_back(center: Center) -> None:
    center.token("sara")
    center.token("piet")
    center.token("adele", "admin")
    incident_id = escalated_incident(
        center.call,
        center.device_id,
        symptom="jammed tray",
        opened_at="2026-11-24T10:00:00Z",
        note="please help olga",
    )
    sid = center.open(reason="incident", incident_id=incident_id)["id"]
    center.wait_state(sid, "active")
    too_long = center.call("POST", f"/sessions/{sid}/observers/{'x' * 65}/allow-input")
    assert too_long.status_code == 422
    try:
        owner_out, owner_controls = asyncio.run(_observer_takes_part(center, sid))
    finally:
        center.call("DELETE", f"/sessions/{sid}")
    assert b"sara-42" in owner_out
    assert b"again-5" in owner_out
    assert b"before-2" not in owner_out
    assert b"after-6" not in owner_out
    typing = [c for c in owner_controls if c.get("event") == "typing"]
    assert len(typing) == 1
    audited = [
        (e["actor"], e["action"], e["details"].get("observer"))
        for e in center.server.api("GET", "/audit", params={"target": center.device_id})["items"]
        if e["action"].startswith("session.observer_") and e["details"]["session_id"] == sid
    ]
    assert sorted(audited) == [
        ("olga", "session.observer_input_allowed", "sara"),
        ("olga", "session.observer_input_revoked", "sara"),
        ("sara", "session.observer_typed", None),
    ]


def test_revoking_a_device_ends_its_sessions_and_refuses_new_ones(center: Center) -> None:
    # Last in this module: the device stays revoked.
    sid = center.open(reason="before revocation")["id"]
    center.wait_state(sid, "active")
    center.server.api("POST", f"/devices/{center.device_id}/revoke")
    closed = center.wait_state(sid, "closed", timeout=10)
    assert closed["close_reason"] == "error"
    assert closed["detail"] == "the device was revoked"
    revoked = center.call("POST", f"/devices/{center.device_id}/sessions", json={"reason": "x"})
    assert revoked.status_code == 409
    assert "revoked" in revoked.json()["detail"]
