"""The agent's command dispatch: verified commands run their handler; every bad one is refused.

A refusal is reported as a ``command.refused`` event (id and reason, never the
signature or body) and, when the id is readable, as a failed result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.health.collectors import Reading
from agent.health.outbox import MemoryOutbox
from agent.remote.commands import (
    CommandDispatcher,
    CommandRegistry,
    CommandRequest,
    Outgoing,
    default_registry,
)
from agent.supervisor import Agent
from shared import topics
from shared.broker_url import BrokerAddress
from shared.ids import new_id, utcnow
from shared.models import Command, CommandResult, DeviceEvent, dump_message, parse_message
from shared.signing import generate_command_key, public_key_pem, sign_command
from shared.wire import TELEMETRY_RESEND
from tests.fixtures.ports import free_port

DEVICE = "mfp-cmd-1"
SERVER_KEY = generate_command_key()
SECRET = "s3cr3t-one-time-key"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "command_key.pub"
    path.write_bytes(public_key_pem(SERVER_KEY))
    return path


def command(
    command_type: str = "echo",
    *,
    command_id: str | None = None,
    device_id: str = DEVICE,
    issued_at: datetime | None = None,
    ttl: timedelta = timedelta(seconds=60),
    body: dict[str, Any] | None = None,
) -> Command:
    issued = issued_at or utcnow()
    return Command(
        id=command_id or f"cmd-{new_id()}",
        type=command_type,
        issued_at=issued,
        expires_at=issued + ttl,
        device_id=device_id,
        body=body if body is not None else {"secret": SECRET},
    )


def signed(cmd: Command, key: Any = SERVER_KEY) -> bytes:
    return dump_message(sign_command(key, cmd))


class Answers:
    def __init__(self, answers: list[Outgoing]) -> None:
        self.raw = answers

    def on(self, topic: str) -> list[bytes]:
        return [a.payload for a in self.raw if a.topic == topic]

    @property
    def results(self) -> list[CommandResult]:
        return [parse_message(CommandResult, p) for p in self.on(topics.cmd_result(DEVICE))]

    @property
    def events(self) -> list[DeviceEvent]:
        return [parse_message(DeviceEvent, p) for p in self.on(topics.events(DEVICE))]


def echo_registry(calls: list[CommandRequest]) -> CommandRegistry:
    registry = CommandRegistry()

    async def echo(request: CommandRequest) -> dict[str, Any]:
        calls.append(request)
        return {"echo": request.body}

    registry.register("echo", echo)
    return registry


@pytest.fixture
def calls() -> list[CommandRequest]:
    return []


@pytest.fixture
def dispatcher(tmp_path: Path, key_file: Path, calls: list[CommandRequest]) -> CommandDispatcher:
    return CommandDispatcher(DEVICE, key_file, tmp_path / "replay.json", echo_registry(calls))


async def handle(dispatcher: CommandDispatcher, payload: bytes) -> Answers:
    return Answers(await dispatcher.handle(payload))


def assert_refused(answers: Answers, command_id: str | None, reason: str) -> None:
    [event] = answers.events
    assert event.type == "command.refused"
    assert event.device_id == DEVICE
    assert event.body == {"id": command_id, "reason": reason}
    if command_id is None:
        assert answers.results == []
    else:
        [result] = answers.results
        assert (result.id, result.ok, result.error) == (command_id, False, reason)
    for answer in answers.raw:
        assert SECRET.encode() not in answer.payload
        assert b'"sig"' not in answer.payload


async def test_a_valid_command_runs_its_handler(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command(body={"x": 1})
    answers = await handle(dispatcher, signed(cmd))
    [result] = answers.results
    assert (result.id, result.ok, result.error) == (cmd.id, True, None)
    assert result.body == {"echo": {"x": 1}}
    assert answers.events == []
    assert [c.id for c in calls] == [cmd.id]


async def test_a_forged_command_is_refused(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command()
    answers = await handle(dispatcher, signed(cmd, generate_command_key()))
    assert_refused(answers, cmd.id, "bad_signature")
    assert calls == []


async def test_a_tampered_command_is_refused(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command(body={"interval_s": 10})
    data = json.loads(signed(cmd))
    data["body"]["interval_s"] = 1
    answers = await handle(dispatcher, json.dumps(data).encode())
    assert_refused(answers, cmd.id, "bad_signature")
    assert calls == []


async def test_a_replayed_command_is_refused_even_after_a_restart(
    tmp_path: Path, key_file: Path, calls: list[CommandRequest]
) -> None:
    replay = tmp_path / "replay.json"
    first = CommandDispatcher(DEVICE, key_file, replay, echo_registry(calls))
    payload = signed(command())
    assert (await handle(first, payload)).results[0].ok
    assert_refused(await handle(first, payload), json.loads(payload)["id"], "replayed")
    # A new dispatcher on the same state_dir (an agent restart) remembers the id.
    restarted = CommandDispatcher(DEVICE, key_file, replay, echo_registry(calls))
    assert_refused(await handle(restarted, payload), json.loads(payload)["id"], "replayed")
    assert len(calls) == 1


async def test_an_expired_command_is_refused(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command(issued_at=utcnow() - timedelta(minutes=10), ttl=timedelta(minutes=2))
    assert_refused(await handle(dispatcher, signed(cmd)), cmd.id, "expired")
    assert calls == []


async def test_a_foreign_command_is_refused(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command(device_id="mfp-someone-else")
    assert_refused(await handle(dispatcher, signed(cmd)), cmd.id, "foreign")
    assert calls == []


async def test_an_unsigned_command_is_refused(
    dispatcher: CommandDispatcher, calls: list[CommandRequest]
) -> None:
    cmd = command()
    assert_refused(await handle(dispatcher, dump_message(cmd)), cmd.id, "unsigned")
    assert calls == []


async def test_without_a_pinned_key_every_command_is_refused(
    tmp_path: Path, calls: list[CommandRequest]
) -> None:
    dispatcher = CommandDispatcher(DEVICE, None, tmp_path / "replay.json", echo_registry(calls))
    cmd = command()
    assert_refused(await handle(dispatcher, signed(cmd)), cmd.id, "no_key")
    assert calls == []


async def test_an_unreadable_key_file_refuses_as_no_key(
    tmp_path: Path, calls: list[CommandRequest]
) -> None:
    dispatcher = CommandDispatcher(
        DEVICE, tmp_path / "missing.pub", tmp_path / "replay.json", echo_registry(calls)
    )
    cmd = command()
    assert_refused(await handle(dispatcher, signed(cmd)), cmd.id, "no_key")


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"id": "cmd-0000001"', json.dumps({"id": "x" * 500}).encode()],
)
async def test_garbage_is_refused_as_malformed_and_reported_as_an_event_only(
    dispatcher: CommandDispatcher, payload: bytes
) -> None:
    answers = await handle(dispatcher, payload)
    assert_refused(answers, None, "malformed")


async def test_a_malformed_command_with_a_readable_id_gets_a_result(
    dispatcher: CommandDispatcher,
) -> None:
    answers = await handle(dispatcher, json.dumps({"id": "cmd-00000042", "type": 5}).encode())
    assert_refused(answers, "cmd-00000042", "malformed")


async def test_an_unknown_type_is_unsupported(dispatcher: CommandDispatcher) -> None:
    cmd = command("firmware.flash")
    [result] = (await handle(dispatcher, signed(cmd))).results
    assert (result.id, result.ok, result.error) == (cmd.id, False, "unsupported")


async def test_a_failing_handler_answers_internal_error(tmp_path: Path, key_file: Path) -> None:
    registry = CommandRegistry()

    async def broken(_request: CommandRequest) -> dict[str, Any]:
        raise RuntimeError("boom")

    registry.register("broken", broken)
    dispatcher = CommandDispatcher(DEVICE, key_file, None, registry)
    cmd = command("broken")
    [result] = (await handle(dispatcher, signed(cmd))).results
    assert (result.ok, result.error) == (False, "internal_error")


async def test_refusals_are_logged_at_warning_without_secrets(
    dispatcher: CommandDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    cmd = command()
    with caplog.at_level(logging.DEBUG, logger="agent.remote.commands"):
        await handle(dispatcher, signed(cmd, generate_command_key()))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert cmd.id in warnings[0].getMessage()
    assert "bad_signature" in warnings[0].getMessage()
    sig = json.loads(signed(cmd))["sig"]
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert sig not in record.getMessage()


# --- the shipped handlers on a real Agent (no broker needed) ----------------------------


class FixedCollector:
    name = "fixed"

    async def collect(self) -> Reading:
        return Reading(
            metrics={"cpu_percent": 3.5},
            faults=[{"code": "SC-541", "severity": "error", "message": "Fuser thermistor open"}],
        )


@pytest.fixture
def agent(tmp_path: Path, key_file: Path) -> Agent:
    return Agent(
        DEVICE,
        BrokerAddress("127.0.0.1", free_port(), tls=False),
        [FixedCollector()],
        MemoryOutbox(100),
        interval_s=30,
        command_key_file=key_file,
        replay_cache_path=tmp_path / "replay.json",
    )


async def test_diagnostics_collect_returns_a_fresh_sample_and_agent_state(agent: Agent) -> None:
    await agent.sample_once()
    await agent.sample_once()
    cmd = command("diagnostics.collect", body={})
    [result] = (await handle(agent.commands, signed(cmd))).results
    assert result.ok
    body = result.body
    assert body["metrics"] == {"cpu_percent": 3.5}
    assert body["faults"][0]["code"] == "SC-541"
    assert body["status"] == "fault"
    assert body["boot_id"] == agent.boot_id
    assert body["agent_version"]
    assert body["outbox_depth"] == 2
    # Diagnostics do not consume a sample number.
    assert agent.samples.next_seq == 2


async def test_config_update_changes_the_interval_at_run_time(agent: Agent) -> None:
    cmd = command("config.update", body={"interval_s": 5})
    [result] = (await handle(agent.commands, signed(cmd))).results
    assert result.ok, result
    assert result.body == {"interval_s": 5.0, "previous": {"interval_s": 30.0}}
    assert agent.interval_s == 5.0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"interval_s": 0.1}, "out_of_bounds"),
        ({"interval_s": 86_400 * 7}, "out_of_bounds"),
        ({"interval_s": "fast"}, "invalid"),
        ({"interval_s": True}, "invalid"),
        ({}, "invalid"),
        ({"broker_url": "mqtt://evil:1883"}, "not_allowed"),
        ({"interval_s": 10, "command_key_file": "/tmp/k.pub"}, "not_allowed"),
    ],
)
async def test_config_update_refuses_anything_else(
    agent: Agent, body: dict[str, Any], error: str
) -> None:
    cmd = command("config.update", body=body)
    [result] = (await handle(agent.commands, signed(cmd))).results
    assert (result.ok, result.error) == (False, error)
    assert agent.interval_s == 30.0


async def test_a_new_interval_reschedules_the_sampler(agent: Agent) -> None:
    sampler = asyncio.create_task(agent._sample_forever())
    try:
        await asyncio.sleep(0.1)
        assert agent.samples.next_seq == 1  # the first sample; the next is due in 30 s
        agent.set_interval(0.1)
        for _ in range(100):
            if agent.samples.next_seq >= 3:
                break
            await asyncio.sleep(0.05)
        assert agent.samples.next_seq >= 3
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


def test_the_default_registry_is_ready_for_session_commands(agent: Agent) -> None:
    registry = default_registry(agent)
    assert registry.types() == ["config.update", "diagnostics.collect", "telemetry.resend"]

    async def open_session(_request: CommandRequest) -> dict[str, Any]:
        return {}

    registry.register("session.open", open_session)
    assert registry.get("session.open") is open_session


async def test_telemetry_resend_asks_the_link_to_republish_this_connections_samples(
    agent: Agent,
) -> None:
    """The server saw a gap in the device's ``seq``: the samples the broker
    acknowledged but the server never stored come again, from the resend window."""
    agent.link._connection_first_id = 7
    before = agent.link._resend_generation
    [result] = (await handle(agent.commands, signed(command(TELEMETRY_RESEND)))).results
    assert result.ok, result
    assert agent.link._resend_cursor == 7
    assert agent.link._resend_generation == before + 1


async def test_telemetry_resend_for_a_watched_device_asks_the_gateway(
    agent: Agent, tmp_path: Path
) -> None:
    """A gap in a device watched through this site gateway: its gateway re-publishes
    the via samples; a device it does not watch is refused (a gateway never speaks
    for another's devices), as is any ``device`` on an agent that watches none."""
    from agent.config_devices import parse_devices, watched_devices
    from agent.health.gateway import SiteGateway

    raw = [{"id": "mfp-9", "host": "192.0.2.10", "snmp_version": "2c", "snmp_community": "c"}]
    [result] = (
        await handle(agent.commands, signed(command(TELEMETRY_RESEND, body={"device": "mfp-9"})))
    ).results
    assert (result.ok, result.error) == (False, "not_allowed")

    gateway = SiteGateway(
        DEVICE,
        watched_devices(parse_devices(raw)),
        agent.link,
        timeout_s=1.0,
        state_dir=tmp_path,
        max_samples=10,
    )
    agent.gateway = gateway
    try:
        gateway._connection_first_id = 4
        [result] = (
            await handle(
                agent.commands, signed(command(TELEMETRY_RESEND, body={"device": "mfp-9"}))
            )
        ).results
        assert (result.ok, result.body) == (True, {"device": "mfp-9"})
        assert gateway._resend_cursor == 4

        gateway._resend_cursor = None
        for body in ({"device": "mfp-other"}, {"device": DEVICE + "-b"}):
            [result] = (
                await handle(agent.commands, signed(command(TELEMETRY_RESEND, body=body)))
            ).results
            assert (result.ok, result.error) == (False, "not_allowed")
        [result] = (
            await handle(agent.commands, signed(command(TELEMETRY_RESEND, body={"device": 7})))
        ).results
        assert (result.ok, result.error) == (False, "invalid")
        assert gateway._resend_cursor is None
    finally:
        gateway.close()
