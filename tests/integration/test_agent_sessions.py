"""The agent's side of remote sessions end to end, with real parts throughout.

A secure center (CA, Mosquitto with mutual TLS and ACLs, `fieldlink server run`),
devices enrolled with `fieldlink agent enroll` and running `fieldlink agent run`
with a site policy in their agent.toml. The test plays the server's session
code: it registers the session with a tunnel endpoint (`SessionRelay` and
`SessionRegistry` in a small Starlette app on uvicorn), publishes a signed
`session.open` with `CommandPublisher`, and watches the device's events on
MQTT. The site acts through `fieldlink agent approve|deny|end|sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy.engine import Engine

from agent.remote.control import control_socket_path, request
from server.commands import CommandPublisher
from server.config import ServerSettings
from server.db import make_engine
from server.mqtt import make_client
from server.sessions.client import AgentConnection
from server.sessions.errors import AgentNotConnected, TunnelError
from server.sessions.keys import generate_one_time_key, hash_session_token, parse_host_key
from server.sessions.registry import PendingSession
from shared import topics
from shared.ids import new_id, new_token, utcnow
from shared.models import (
    CommandResult,
    DeviceEvent,
    DeviceState,
    SessionClosedReport,
    SessionOpen,
    dump_message,
    parse_message,
)
from shared.signing import generate_command_key, public_key_pem, sign_command
from tests.fixtures import waiting
from tests.fixtures.center import TlsBroker, enroll_agent, secure_center
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import AgentProcess, ServerProcess, SimulatorProcess
from tests.fixtures.signed_commands import make_command
from tests.fixtures.tcp_services import http_page
from tests.fixtures.tunnel import TunnelEndpoint, tunnel_endpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: Generous waits: two cores, other suites running beside this one.
WAIT_S = 30.0


# the center (one per module: CA, TLS broker, server) -------------------------------------


@dataclass
class Center:
    server: ServerProcess
    broker: TlsBroker
    settings: ServerSettings
    directory: Path


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    directory = tmp_path_factory.mktemp("sessions-center")
    database_url = f"sqlite:///{directory / 'fieldlink.db'}"
    with secure_center(directory, database_url) as (server, broker):
        pki = directory / "state" / "pki"
        settings = ServerSettings(
            database_url=database_url,
            # The server's own listener: its client ids are its own there.
            broker_url=f"mqtts://127.0.0.1:{broker.server_port}",
            state_dir=directory / "state",
            broker_ca=pki / "ca.pem",
            broker_cert=pki / "server-client.pem",
            broker_key=pki / "server-client.key",
        )
        yield Center(server, broker, settings, directory)


@pytest.fixture
def engine(center: Center) -> Iterator[Engine]:
    engine = make_engine(center.settings.database_url)
    yield engine
    engine.dispose()


# the tunnel endpoint ---------------------------------------------------------------------


@pytest.fixture
async def tunnel() -> AsyncIterator[TunnelEndpoint]:
    async with tunnel_endpoint(login_timeout_s=10, stop_timeout_s=15) as endpoint:
        yield endpoint


# the device's topics, watched with the server's identity ---------------------------------


@dataclass
class Watcher:
    device_id: str
    on_result: Callable[[str, CommandResult], None]
    events: list[DeviceEvent] = field(default_factory=list)
    online: bool = False

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = bytes(message.payload)
            topic = str(message.topic)
            if topic == topics.events(self.device_id):
                self.events.append(parse_message(DeviceEvent, payload))
            elif topic == topics.cmd_result(self.device_id):
                self.on_result(self.device_id, parse_message(CommandResult, payload))
            elif topic == topics.state(self.device_id):
                self.online = parse_message(DeviceState, payload).online

    def bodies(self, event_type: str, session_id: str) -> list[dict[str, Any]]:
        return [
            event.body
            for event in self.events
            if event.type == event_type and event.body.get("session_id") == session_id
        ]

    def types(self, session_id: str) -> list[str]:
        return [e.type for e in self.events if e.body.get("session_id") == session_id]


async def eventually(predicate: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    return await waiting.eventually(predicate, within, what)


# an enrolled device running `fieldlink agent run` ----------------------------------------


@dataclass
class Device:
    device_id: str
    config: Path
    host_public: str
    process: AgentProcess
    watcher: Watcher

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def enroll(center: Center, name: str, policy_toml: str) -> tuple[str, Path, str]:
    device_id = f"mfp-ses-{name}-{new_id()[:6]}"
    registered = center.server.api(
        "POST", "/devices",
        json={"id": device_id, "serial": device_id.upper(), "model": "MP 6055", "type": "mfp",
              "customer": "Test Customer"},
    )  # fmt: skip
    directory = center.directory / device_id
    done = enroll_agent(center.server, registered["enrollment_token"], directory)
    assert done.returncode == 0, done.stderr
    config = directory / "agent.toml"
    # The [agent] table enrollment wrote goes on; then the site's tables.
    config.write_text(
        config.read_text()
        + 'interval_s = 30\nprofile = "mfp"\nsimulate = true\nkeepalive_s = 5\n'
        + 'reconnect_min_s = 0.2\nreconnect_max_s = 2\ntunnel_proxy = "none"\n'
        + policy_toml
    )
    host_public = (directory / "ssh_host_ed25519_key.pub").read_text().strip()
    return device_id, config, host_public


@contextlib.asynccontextmanager
async def running_device(
    center: Center, publisher: CommandPublisher, name: str, policy_toml: str, **env: str
) -> AsyncIterator[Device]:
    device_id, config, host_public = await asyncio.to_thread(enroll, center, name, policy_toml)
    watcher = Watcher(device_id, publisher.deliver_result)
    process = AgentProcess(config.parent, device_id, "unused")
    process.config = config
    async with make_client(center.settings, identifier=f"watch-{new_id()[:8]}") as client:
        await client.subscribe(f"{topics.PREFIX}/{device_id}/#", qos=1)
        listener = asyncio.create_task(watcher.listen(client))
        process._spawn(
            [sys.executable, "-m", "shared", "agent", "run", "--config", str(config)], **env
        )
        device = Device(device_id, config, host_public, process, watcher)
        try:
            # The birth comes after the agent subscribed to its commands.
            await eventually(lambda: watcher.online, f"{device_id} online")
            yield device
        finally:
            await asyncio.to_thread(process.stop)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


@pytest.fixture
async def publisher(center: Center, engine: Engine) -> AsyncIterator[CommandPublisher]:
    async with CommandPublisher.from_ca(center.settings, engine) as started:
        await started.wait_connected(WAIT_S)
        yield started


# the server's side of one session --------------------------------------------------------


@dataclass
class Opened:
    session_id: str
    token: str
    result: CommandResult


def expect_session(
    tunnel: TunnelEndpoint, host_public: str, *, expires_in_s: float = 120.0, **fields: Any
) -> tuple[str, str, dict[str, Any]]:
    """Register a session with the tunnel endpoint; its id, token and ``session.open`` body."""
    session_id = f"ses-{new_id()}"
    key = generate_one_time_key()
    token = new_token()
    expires_at = utcnow() + timedelta(seconds=expires_in_s)
    tunnel.registry.expect(
        PendingSession(
            session_id=session_id,
            token_hash=hash_session_token(token),
            client_key=key.private_key,
            host_key=parse_host_key(host_public),
            expires_at=expires_at,
        )
    )
    body = SessionOpen(
        session_id=session_id,
        ws_url=tunnel.url(session_id),
        token=token,
        client_key=key.public_openssh,
        expires_at=expires_at,
        operator=fields.pop("operator", "alice"),
        reason=fields.pop("reason", "toner jam, customer on the phone"),
        **fields,
    )
    return session_id, token, body.model_dump(mode="json", exclude_none=True)


async def open_session(
    tunnel: TunnelEndpoint, publisher: CommandPublisher, device: Device, **fields: Any
) -> Opened:
    session_id, token, body = expect_session(tunnel, device.host_public, **fields)
    pending = await publisher.send(device.device_id, "session.open", body)
    return Opened(session_id, token, await pending.result(WAIT_S))


async def fieldlink_agent(device: Device, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared", "agent", *args, "--config", str(device.config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), WAIT_S)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def closed_report(device: Device, session_id: str) -> SessionClosedReport:
    return await closed_report_of(device.watcher, session_id)


def assert_no_secret(device: Device, opened: Opened) -> None:
    assert opened.token not in device.log()
    for event in device.watcher.events:
        assert opened.token not in event.model_dump_json()


# the tests -------------------------------------------------------------------------------


async def test_consent_none_exec_refusal_and_a_closed_report_with_bytes(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    policy = '[agent.services]\nweb = "127.0.0.1:9"\n'
    async with running_device(center, publisher, "none", policy) as device:
        opened = await open_session(tunnel, publisher, device)
        assert opened.result.ok, opened.result
        assert opened.result.body == {"session_id": opened.session_id, "state": "connecting"}
        connection: AgentConnection = await tunnel.registry.wait_for_agent(
            opened.session_id, WAIT_S
        )
        result = await connection.run("echo hello-from-$FIELDLINK_SESSION; exit 3", WAIT_S)
        assert result.exit_status == 3
        assert result.stdout == f"hello-from-{opened.session_id}\n"
        await eventually(
            lambda: device.watcher.bodies("session.started", opened.session_id), "started"
        )
        with pytest.raises(TunnelError, match="refused a forward"):
            await connection.open_forward("database", 5432)
        [refused] = await eventually(
            lambda: device.watcher.bodies("session.refused", opened.session_id), "refused"
        )
        assert refused["kind"] == "forward"
        assert refused["target"] == "database:5432"

        # The server closes it with a signed session.close: the tunnel goes, the report comes.
        closing = await publisher.execute(
            device.device_id,
            "session.close",
            {"session_id": opened.session_id, "reason": "operator"},
            timeout_s=WAIT_S,
        )
        assert closing.ok, closing
        assert closing.body == {"session_id": opened.session_id, "state": "closed"}
        assert await asyncio.wait_for(connection.wait_closed(), WAIT_S) == "operator"
        report = await closed_report(device, opened.session_id)
        assert report.close_reason == "operator"
        assert report.bytes_from_server > 0
        assert report.bytes_to_server > 0
        assert report.started_at is not None
        assert report.ended_at is not None
        assert [(r.kind, r.target) for r in report.refusals] == [("forward", "database:5432")]
        assert device.watcher.types(opened.session_id) == [
            "session.started",
            "session.refused",
            "session.closed",
        ]

        # Nothing is held any more; closing again is a clean refusal.
        again = await publisher.execute(
            device.device_id, "session.close", {"session_id": opened.session_id},
            timeout_s=WAIT_S,
        )  # fmt: skip
        assert (again.ok, again.error) == (False, "unknown_session")
        assert_no_secret(device, opened)

        # A stopping agent ends its sessions and reports them before it goes offline.
        last = await open_session(tunnel, publisher, device)
        connection = await tunnel.registry.wait_for_agent(last.session_id, WAIT_S)
        await asyncio.to_thread(device.process.stop)
        assert await asyncio.wait_for(connection.wait_closed(), WAIT_S) == "site_ended"
        assert (await closed_report(device, last.session_id)).close_reason == "site_ended"
        await eventually(lambda: not device.watcher.online, "the shutdown state")


async def test_consent_required_approved_on_the_device_then_ended_there(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    policy = '[agent.policy]\nconsent = "required"\napproval_timeout_s = 120\n'
    async with running_device(center, publisher, "req", policy) as device:
        opened = await open_session(tunnel, publisher, device, operator="bob", reason="SC-541")
        assert opened.result.ok, opened.result
        assert opened.result.body["state"] == "awaiting_consent"
        [awaiting] = await eventually(
            lambda: device.watcher.bodies("session.awaiting_consent", opened.session_id),
            "awaiting_consent",
        )
        assert (awaiting["operator"], awaiting["reason"]) == ("bob", "SC-541")
        assert 0 < awaiting["timeout_s"] <= 120
        assert "fieldlink agent approve" in device.log()  # the notice for the site

        code, out, err = await fieldlink_agent(device, "sessions")
        assert code == 0, err
        assert opened.session_id in out
        assert "awaiting_consent" in out
        assert tunnel.registry.get(opened.session_id) is None  # it has not dialed

        code, out, err = await fieldlink_agent(device, "approve", opened.session_id)
        assert (code, err) == (0, "")
        assert out == f"session {opened.session_id} approved: the agent is connecting\n"
        connection = await tunnel.registry.wait_for_agent(opened.session_id, WAIT_S)
        result = await connection.run("echo approved", WAIT_S)
        assert result.stdout == "approved\n"
        assert device.watcher.bodies("session.approved", opened.session_id) == [
            {"session_id": opened.session_id, "by": "site", "consent": "required", "via": "local"}
        ]

        # `fieldlink agent end`: torn down by the time the command returns, site_ended.
        code, out, err = await fieldlink_agent(device, "end", opened.session_id)
        assert (code, err) == (0, "")
        assert out == f"session {opened.session_id} ended\n"
        assert connection.is_closed
        assert await connection.wait_closed() == "site_ended"
        report = await closed_report(device, opened.session_id)
        assert report.close_reason == "site_ended"
        assert report.bytes_from_server > 0

        # The same request the CLI sends, timed from the request to the server's side closed.
        second = await open_session(tunnel, publisher, device)
        await eventually(
            lambda: device.watcher.bodies("session.awaiting_consent", second.session_id),
            "awaiting_consent",
        )
        socket_path = control_socket_path(device.config.parent / "state")
        await asyncio.to_thread(request, socket_path, "approve", second.session_id)
        connection = await tunnel.registry.wait_for_agent(second.session_id, WAIT_S)
        assert (await connection.run("true", WAIT_S)).exit_status == 0
        started = time.monotonic()
        ending = asyncio.create_task(
            asyncio.to_thread(request, socket_path, "end", second.session_id)
        )
        assert await asyncio.wait_for(connection.wait_closed(), WAIT_S) == "site_ended"
        assert time.monotonic() - started < 2.0
        assert (await ending)["state"] == "closed"
        assert (await closed_report(device, second.session_id)).close_reason == "site_ended"
        assert_no_secret(device, opened)


async def test_consent_required_denied_on_the_device_never_dials(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    policy = '[agent.policy]\nconsent = "required"\napproval_timeout_s = 120\n'
    async with running_device(center, publisher, "deny", policy) as device:
        denied = await open_session(tunnel, publisher, device)
        ended = await open_session(tunnel, publisher, device)
        for opened in (denied, ended):
            await eventually(
                partial(device.watcher.bodies, "session.awaiting_consent", opened.session_id),
                "awaiting_consent",
            )
        code, out, err = await fieldlink_agent(device, "deny", denied.session_id)
        assert (code, out, err) == (0, f"session {denied.session_id} denied\n", "")
        code, out, err = await fieldlink_agent(device, "end", ended.session_id)
        assert (code, err) == (0, "")
        assert out == f"session {ended.session_id} denied (it was awaiting consent)\n"
        for opened in (denied, ended):
            [body] = await eventually(
                partial(device.watcher.bodies, "session.denied", opened.session_id), "denied"
            )
            assert body == {"session_id": opened.session_id, "why": "denied", "via": "local"}
            with pytest.raises(AgentNotConnected):
                await tunnel.registry.wait_for_agent(opened.session_id, 1.0)
            assert device.watcher.types(opened.session_id) == [
                "session.awaiting_consent",
                "session.denied",
            ]

        # The site's mistakes are one clear line each.
        code, out, err = await fieldlink_agent(device, "approve", denied.session_id)
        assert code != 0
        assert out == ""
        assert err == f"error: no session {denied.session_id} on this device\n"
        code, out, _ = await fieldlink_agent(device, "sessions")
        assert (code, out) == (0, "no remote sessions\n")


async def test_consent_required_times_out_and_a_stopped_agent_is_reported_not_running(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    policy = '[agent.policy]\nconsent = "required"\napproval_timeout_s = 1\n'
    async with running_device(center, publisher, "timeout", policy) as device:
        opened = await open_session(tunnel, publisher, device)
        assert opened.result.body["state"] == "awaiting_consent"
        [body] = await eventually(
            lambda: device.watcher.bodies("session.denied", opened.session_id), "denied"
        )
        assert body == {"session_id": opened.session_id, "why": "timeout"}
        [awaiting] = device.watcher.bodies("session.awaiting_consent", opened.session_id)
        assert awaiting["timeout_s"] == 1.0
        with pytest.raises(AgentNotConnected):
            await tunnel.registry.wait_for_agent(opened.session_id, 1.0)
        code, _, err = await fieldlink_agent(device, "approve", opened.session_id)
        assert code != 0
        assert "no session" in err

        await asyncio.to_thread(device.process.stop)
        code, out, err = await fieldlink_agent(device, "sessions")
        assert code != 0
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("error: the agent is not running")


# a simulated fleet accepts sessions too ----------------------------------------------------


async def test_simulated_devices_accept_sessions(
    tmp_path: Path, mosquitto: MosquittoBroker, tunnel: TunnelEndpoint
) -> None:
    signing_key = generate_command_key()
    key_file = tmp_path / "command-signing.pub.pem"
    key_file.write_bytes(public_key_pem(signing_key))
    host_keys = tmp_path / "host-keys"
    device_id = "simses-0001"
    async with http_page(b"<h1>panel</h1>", content_type=None) as web_port:
        simulator = SimulatorProcess(tmp_path, mosquitto.url, devices=2, prefix="simses")
        simulator.args += [
            "--command-key", str(key_file), "--host-key-dir", str(host_keys),
            "--service", f"web=127.0.0.1:{web_port}", "--state-dir", str(tmp_path / "sim"),
        ]  # fmt: skip
        results: dict[str, CommandResult] = {}
        watcher = Watcher(device_id, lambda _d, r: results.__setitem__(r.id, r))
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="simses") as client:
            await client.subscribe(f"{topics.PREFIX}/{device_id}/#", qos=1)
            listener = asyncio.create_task(watcher.listen(client))
            simulator.start()
            try:
                await eventually(lambda: watcher.online, "the simulated device online")
                # The keys the demo registers with the server: one pair per device.
                assert sorted(p.name for p in host_keys.iterdir()) == [
                    "simses-0000", "simses-0000.pub", "simses-0001", "simses-0001.pub",
                ]  # fmt: skip
                host_public = (host_keys / f"{device_id}.pub").read_text()
                session_id, _, body = expect_session(tunnel, host_public, services=["web"])
                command = make_command(new_id(), device_id, utcnow(), timedelta(seconds=60), body)
                command = sign_command(signing_key, command)
                await client.publish(topics.cmd(device_id), dump_message(command), qos=1)
                result = await eventually(lambda: results.get(command.id), "the result")
                assert result.ok, result
                assert result.body == {"session_id": session_id, "state": "connecting"}

                connection = await tunnel.registry.wait_for_agent(session_id, WAIT_S)
                assert (await connection.run("echo simulated", WAIT_S)).stdout == "simulated\n"
                reader, writer = await connection.open_forward("web")
                writer.write(b"GET / HTTP/1.0\r\n\r\n")
                page = await asyncio.wait_for(reader.read(), WAIT_S)
                assert page.endswith(b"<h1>panel</h1>")
                sftp = await connection.start_sftp()
                async with sftp.open("/note.txt", "w") as handle:
                    await handle.write("hello")
                assert (tmp_path / "sim" / device_id / "files" / "note.txt").read_text() == "hello"
                sftp.exit()
                await connection.close("operator")
                report = await closed_report_of(watcher, session_id)
                assert report.close_reason == "operator"
                assert report.bytes_to_server > 0
            finally:
                simulator.stop()
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)


async def closed_report_of(watcher: Watcher, session_id: str) -> SessionClosedReport:
    [body] = await eventually(lambda: watcher.bodies("session.closed", session_id), "closed")
    return SessionClosedReport.model_validate(body)


# the session process: the agent gives its memory back -------------------------------------


def footprint(device: Device) -> dict[str, Any]:
    return request(control_socket_path(device.config.parent / "state"), "footprint")


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("PPid:", 1)[1].split()[0])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0 until its parent reaps it.
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" in status.read_text()


async def test_a_session_runs_in_a_process_that_goes_with_it_and_the_agent_never_loads_asyncssh(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    async with running_device(
        center, publisher, "proc", "", FIELDLINK_SESSION_PROCESS="true"
    ) as device:
        before = await asyncio.to_thread(footprint, device)
        assert before["session_processes"] == []
        assert "asyncssh" not in before["loaded"]

        opened = await open_session(tunnel, publisher, device)
        assert opened.result.ok, opened.result
        connection = await tunnel.registry.wait_for_agent(opened.session_id, WAIT_S)
        result = await connection.run("echo $PPID", WAIT_S)
        during = await asyncio.to_thread(footprint, device)
        [child] = during["session_processes"]
        assert child != during["pid"]
        # The SSH server runs in the session process, not in the agent.
        assert "asyncssh" not in during["loaded"]
        assert "websockets" not in during["loaded"]
        assert parent_of(child) == during["pid"]
        assert int(result.stdout) != during["pid"]

        closing = await publisher.execute(
            device.device_id, "session.close", {"session_id": opened.session_id},
            timeout_s=WAIT_S,
        )  # fmt: skip
        assert closing.ok, closing
        assert (await closed_report(device, opened.session_id)).close_reason == "operator"
        after = await asyncio.to_thread(footprint, device)
        assert after["pid"] == before["pid"]
        assert after["session_processes"] == []
        assert "asyncssh" not in after["loaded"]
        assert "websockets" not in after["loaded"]
        assert gone(child)
        # A fresh spare waits for the next session (a process that never served one).
        spare = await eventually(
            lambda: footprint(device)["spare_process"], "the spare session process"
        )
        assert spare != child
        assert parent_of(spare) == after["pid"]
        again = await open_session(tunnel, publisher, device)
        assert again.result.ok, again.result
        await tunnel.registry.wait_for_agent(again.session_id, WAIT_S)
        assert (await asyncio.to_thread(footprint, device))["session_processes"] == [spare]


async def test_a_killed_session_process_ends_the_session_with_a_reason(
    center: Center, tunnel: TunnelEndpoint, publisher: CommandPublisher
) -> None:
    async with running_device(
        center, publisher, "kill", "", FIELDLINK_SESSION_PROCESS="true"
    ) as device:
        opened = await open_session(tunnel, publisher, device)
        assert opened.result.ok, opened.result
        connection = await tunnel.registry.wait_for_agent(opened.session_id, WAIT_S)
        await eventually(
            lambda: device.watcher.bodies("session.started", opened.session_id), "started"
        )
        [child] = (await asyncio.to_thread(footprint, device))["session_processes"]
        os.kill(child, signal.SIGKILL)

        report = await closed_report(device, opened.session_id)
        assert report.close_reason == "error"
        assert report.detail == "the session process was killed (SIGKILL) before it reported"
        assert report.started_at is not None
        await asyncio.wait_for(connection.wait_closed(), WAIT_S)
        after = await asyncio.to_thread(footprint, device)
        assert after["session_processes"] == []
        assert "asyncssh" not in after["loaded"]
        assert gone(child)
        # The agent is still there and takes the next session.
        again = await open_session(tunnel, publisher, device)
        assert again.result.ok, again.result
        await tunnel.registry.wait_for_agent(again.session_id, WAIT_S)
