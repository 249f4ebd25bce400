"""Signed commands end to end: a real Mosquitto, the real `fieldlink agent run`, a CA made here.

A raw subscriber watches what the agent answers on ``.../events`` and
``.../cmd/result``: a valid ``diagnostics.collect`` gets its result; a forged,
a replayed, an expired and a foreign command are refused and reported on both.
Then :class:`server.commands.CommandPublisher` drives the same agent, with the
results fed to it from the raw subscriber (the ingest's role in the server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from provisioning.ca import CertificateAuthority
from server.commands import CommandPublisher, CommandTimeout, DeviceRevoked
from server.config import ServerSettings
from server.db import create_schema, make_engine, session_scope
from server.models.device import Device
from shared import topics
from shared.errors import NotFound
from shared.ids import new_id, utcnow
from shared.models import (
    Command,
    CommandResult,
    DeviceEvent,
    DeviceState,
    dump_message,
    parse_message,
)
from shared.signing import generate_command_key, sign_command
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import AgentProcess
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

SECRET = "never-in-a-report-or-log"


class Watcher:
    """A raw MQTT client: records everything under one device, and publishes commands."""

    def __init__(self, broker: MosquittoBroker, device_id: str) -> None:
        self.broker = broker
        self.device_id = device_id
        self.seen: list[tuple[str, bytes]] = []
        self.on_result: Callable[[str, CommandResult], None] | None = None
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = bytes(message.payload)
            topic = str(message.topic)
            self.seen.append((topic, payload))
            if topic == topics.cmd_result(self.device_id) and self.on_result is not None:
                self.on_result(self.device_id, parse_message(CommandResult, payload))

    async def publish(self, payload: bytes) -> None:
        assert self.client is not None
        await self.client.publish(topics.cmd(self.device_id), payload, qos=1)

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for seen_topic, payload in self.seen if seen_topic == topic]

    def results(self) -> dict[str, list[CommandResult]]:
        found: dict[str, list[CommandResult]] = {}
        for payload in self.payloads(topics.cmd_result(self.device_id)):
            result = parse_message(CommandResult, payload)
            found.setdefault(result.id, []).append(result)
        return found

    def refusals(self) -> list[dict[str, Any]]:
        events = [
            parse_message(DeviceEvent, p) for p in self.payloads(topics.events(self.device_id))
        ]
        return [event.body for event in events if event.type == "command.refused"]

    def online_births(self) -> int:
        states = [
            parse_message(DeviceState, p) for p in self.payloads(topics.state(self.device_id))
        ]
        return sum(1 for state in states if state.online)

    async def wait_for(self, predicate: Callable[[], Any], within: float, what: str) -> Any:
        return await eventually(predicate, within, what)


@pytest.fixture
async def watcher_factory(
    mosquitto: MosquittoBroker,
) -> AsyncIterator[Callable[[str], Any]]:
    started: list[tuple[Watcher, aiomqtt.Client, asyncio.Task[None]]] = []

    async def start(device_id: str) -> Watcher:
        watcher = Watcher(mosquitto, device_id)
        client = aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"watch-{new_id()[:8]}")
        await client.__aenter__()
        await client.subscribe(f"{topics.PREFIX}/{device_id}/#", qos=1)
        watcher.client = client
        task = asyncio.create_task(watcher._listen(client))
        started.append((watcher, client, task))
        return watcher

    yield start
    for _watcher, client, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.__aexit__(None, None, None)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "server")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def start_agent(
    agents: list[AgentProcess],
    tmp_path: Path,
    device_id: str,
    broker: MosquittoBroker,
    **settings: Any,
) -> AgentProcess:
    # A long interval: these tests are about commands, not telemetry.
    agent = AgentProcess(tmp_path, device_id, broker.url, interval_s=30, **settings)
    agent.start()
    agents.append(agent)
    return agent


def command(
    device_id: str,
    command_type: str = "diagnostics.collect",
    *,
    issued_ago: timedelta = timedelta(0),
    ttl: timedelta = timedelta(seconds=60),
    body: dict[str, Any] | None = None,
) -> Command:
    issued = utcnow() - issued_ago
    return Command(
        id=new_id(),
        type=command_type,
        issued_at=issued,
        expires_at=issued + ttl,
        device_id=device_id,
        body=body if body is not None else {"note": SECRET},
    )


def refused_result(result: CommandResult, reason: str) -> bool:
    return not result.ok and result.error == reason


async def test_agent_runs_a_valid_command_and_refuses_forged_replayed_expired_foreign(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    ca: CertificateAuthority,
    agents: list[AgentProcess],
    watcher_factory: Callable[[str], Any],
) -> None:
    device = "mfp-cmd-e2e-1"
    key = ca.command_signing_key()
    watcher: Watcher = await watcher_factory(device)
    agent = start_agent(
        agents, tmp_path, device, mosquitto, command_key_file=str(ca.paths.command_public_key)
    )
    # The birth comes after the agent subscribed to its cmd topic.
    await watcher.wait_for(watcher.online_births, 15, "the agent's birth")

    valid = sign_command(key, command(device))
    forged = sign_command(generate_command_key(), command(device))
    replayed = sign_command(key, command(device, "config.update", body={"interval_s": 20}))
    expired = sign_command(key, command(device, issued_ago=timedelta(minutes=10)))
    foreign = sign_command(key, command("mfp-somebody-else"))
    for cmd in (valid, forged, replayed, replayed, expired, foreign):
        await watcher.publish(dump_message(cmd))

    def all_results() -> dict[str, list[CommandResult]] | None:
        found = watcher.results()
        return found if len(found) == 5 and len(found[replayed.id]) == 2 else None

    results = await watcher.wait_for(all_results, 15, "six results")
    [diagnostics] = results[valid.id]
    assert diagnostics.ok, diagnostics
    assert diagnostics.body["metrics"]
    assert any(name.startswith("mfp.") for name in diagnostics.body["metrics"])
    assert diagnostics.body["agent_version"]
    assert diagnostics.body["boot_id"]
    assert diagnostics.body["outbox_depth"] >= 0
    # Commands run concurrently: either copy may answer first, but only one runs.
    [accepted] = [r for r in results[replayed.id] if r.ok]
    assert accepted.body["interval_s"] == 20.0
    [refused] = [r for r in results[replayed.id] if not r.ok]
    assert refused.error == "replayed"
    assert refused_result(results[forged.id][0], "bad_signature")
    assert refused_result(results[expired.id][0], "expired")
    assert refused_result(results[foreign.id][0], "foreign")

    await watcher.wait_for(lambda: len(watcher.refusals()) == 4, 10, "four refusal events")
    refusals = watcher.refusals()
    assert sorted((r["id"], r["reason"]) for r in refusals) == sorted(
        [
            (forged.id, "bad_signature"),
            (replayed.id, "replayed"),
            (expired.id, "expired"),
            (foreign.id, "foreign"),
        ]
    )
    # Neither the reports nor the agent's log carry a signature or a command's body.
    answers = b"".join(
        watcher.payloads(topics.events(device)) + watcher.payloads(topics.cmd_result(device))
    )
    assert SECRET.encode() not in answers
    assert b'"sig"' not in answers
    log = agent.log_path.read_text()
    assert "replayed" in log
    assert SECRET not in log
    for cmd in (valid, forged, replayed, expired, foreign):
        assert cmd.sig not in log

    # A restart does not reopen the replay window: the replay cache is in state_dir.
    agent.stop()
    agent.start()
    await watcher.wait_for(lambda: watcher.online_births() >= 2, 15, "the second birth")
    await watcher.publish(dump_message(valid))
    await watcher.wait_for(
        lambda: len(watcher.results()[valid.id]) == 2, 15, "the replay after restart"
    )
    assert refused_result(watcher.results()[valid.id][1], "replayed")


async def test_agent_without_a_pinned_key_refuses_every_command(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    ca: CertificateAuthority,
    agents: list[AgentProcess],
    watcher_factory: Callable[[str], Any],
) -> None:
    device = "mfp-cmd-e2e-nokey"
    watcher: Watcher = await watcher_factory(device)
    start_agent(agents, tmp_path, device, mosquitto)
    await watcher.wait_for(watcher.online_births, 15, "the agent's birth")
    cmd = sign_command(ca.command_signing_key(), command(device))
    await watcher.publish(dump_message(cmd))
    await watcher.wait_for(lambda: watcher.results().get(cmd.id), 15, "the refusal")
    assert refused_result(watcher.results()[cmd.id][0], "no_key")
    assert watcher.refusals() == [{"id": cmd.id, "reason": "no_key"}]


async def test_server_publisher_signs_sends_and_awaits_results(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    ca: CertificateAuthority,
    agents: list[AgentProcess],
    watcher_factory: Callable[[str], Any],
) -> None:
    device, revoked = "mfp-cmd-e2e-srv", "mfp-cmd-e2e-revoked"
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'fieldlink.db'}",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "server",
    )
    engine = make_engine(settings.database_url)
    try:
        await asyncio.to_thread(create_schema, engine)
        with session_scope(engine) as session:
            for device_id in (device, revoked):
                session.add(
                    Device(id=device_id, serial=device_id, model="M", type="mfp", customer="C")
                )
        with session_scope(engine) as session:
            row = session.get(Device, revoked)
            assert row is not None
            row.revoked_at = utcnow()

        watcher: Watcher = await watcher_factory(device)
        start_agent(
            agents, tmp_path, device, mosquitto, command_key_file=str(ca.paths.command_public_key)
        )
        await watcher.wait_for(watcher.online_births, 15, "the agent's birth")

        async with CommandPublisher.from_ca(settings, engine) as publisher:
            watcher.on_result = publisher.deliver_result
            result = await publisher.execute(device, "diagnostics.collect", timeout_s=10)
            assert result.ok, result
            assert result.body["boot_id"]
            assert result.body["metrics"]

            update = await publisher.execute(
                device, "config.update", {"interval_s": 2}, timeout_s=10
            )
            assert update.ok, update
            assert update.body == {"interval_s": 2.0, "previous": {"interval_s": 30.0}}
            # The new interval holds at once: two samples come well before the old 30 s.
            samples_before = len(watcher.payloads(topics.telemetry(device)))
            await watcher.wait_for(
                lambda: len(watcher.payloads(topics.telemetry(device))) >= samples_before + 2,
                10,
                "samples at the new interval",
            )
            refused = await publisher.execute(
                device, "config.update", {"broker_url": "mqtt://elsewhere"}, timeout_s=10
            )
            assert (refused.ok, refused.error) == (False, "not_allowed")
            unknown_type = await publisher.execute(device, "firmware.flash", timeout_s=10)
            assert (unknown_type.ok, unknown_type.error) == (False, "unsupported")

            # A command that expires before the agent sees it is refused by the agent.
            pending = await publisher.publish(
                publisher.build(device, "diagnostics.collect", now=utcnow() - timedelta(hours=1))
            )
            # Another device cannot answer for this one.
            intruder = CommandResult(id=pending.command.id, ok=True, ts=utcnow())
            publisher.deliver_result("mfp-intruder", intruder)
            stale = await pending.result(10)
            assert (stale.ok, stale.error) == (False, "expired")

            # Nobody hands the result over: the caller gets a clear timeout.
            watcher.on_result = None
            with pytest.raises(CommandTimeout, match="no result from mfp-cmd-e2e-srv"):
                await publisher.execute(device, "diagnostics.collect", timeout_s=0.5)

            with pytest.raises(DeviceRevoked):
                await publisher.send(revoked, "diagnostics.collect")
            with pytest.raises(NotFound):
                await publisher.send("mfp-never-registered", "diagnostics.collect")
            assert not watcher.payloads(topics.cmd(revoked))

            # What went out on the wire: signed commands for this device, 60 s to live.
            sent = [parse_message(Command, p) for p in watcher.payloads(topics.cmd(device))]
            assert len(sent) == 6
            assert all(c.sig and c.device_id == device for c in sent)
            assert (sent[0].expires_at - sent[0].issued_at) == timedelta(seconds=60)
    finally:
        engine.dispose()
