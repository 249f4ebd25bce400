"""Remote sessions on the device: policy checks, consent, close, limits, and what is reported.

The controller is driven through its command handlers (and once through the
real dispatcher with a signed command). Sessions are :class:`ScriptedSession`
objects standing in for the SSH server, except in the last tests, where the
real :class:`agent.remote.sshd.AgentSession` dials a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.remote.commands import (
    CommandDispatcher,
    CommandFailed,
    CommandRegistry,
    Outgoing,
)
from agent.remote.outcome import Refusal
from agent.remote.policy import ServiceTarget, SitePolicy
from agent.remote.session_runners import SessionHooks
from agent.remote.sessions import SessionController
from shared import topics
from shared.errors import Conflict, NotFound
from shared.ids import isoformat_z, new_id, utcnow
from shared.models import (
    Command,
    CommandResult,
    DeviceEvent,
    SessionClosedReport,
    SessionOpen,
    dump_message,
    parse_message,
)
from shared.signing import generate_command_key, public_key_pem, sign_command
from tests.fixtures import waiting
from tests.fixtures.agent_sessions import TOKEN, ScriptedSession, open_body, request
from tests.fixtures.signed_commands import make_command

DEVICE = "mfp-sessions-1"
SERVICES = {"web": ServiceTarget("web", "127.0.0.1", 80), "vnc": ServiceTarget("vnc", "::1", 5900)}


@dataclass
class Device:
    """A controller with its published events and the sessions it dialed."""

    controller: SessionController
    published: list[Outgoing] = field(default_factory=list)
    dialed: list[ScriptedSession] = field(default_factory=list)

    def events(self, event_type: str | None = None) -> list[DeviceEvent]:
        found = [parse_message(DeviceEvent, o.payload) for o in self.published]
        assert all(o.topic == topics.events(DEVICE) for o in self.published)
        return [e for e in found if event_type is None or e.type == event_type]

    def bodies(self, event_type: str) -> list[dict[str, Any]]:
        return [e.body for e in self.events(event_type)]


def make_device(policy: SitePolicy, **options: Any) -> Device:
    device = Device(controller=None)  # type: ignore[arg-type]

    def factory(spec: SessionOpen, policy: SitePolicy, hooks: SessionHooks) -> ScriptedSession:
        session = ScriptedSession(spec, policy, hooks)
        device.dialed.append(session)
        return session

    device.controller = SessionController(
        DEVICE,
        policy,
        host_key_path=Path("/nonexistent/ssh_host_ed25519_key"),
        publish=device.published.append,
        session_factory=options.pop("session_factory", factory),
        **options,
    )
    return device


async def open_session(device: Device, **changes: Any) -> tuple[str, dict[str, Any]]:
    body = open_body(**changes)
    answer = await device.controller.handle_open(request("session.open", body))
    return body["session_id"], answer


async def close_session(device: Device, session_id: str, reason: str = "operator") -> Any:
    body = {"session_id": session_id, "reason": reason}
    return await device.controller.handle_close(request("session.close", body))


async def eventually(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    return await waiting.eventually(predicate, within, interval=0.005)


def test_register_puts_both_handlers_in_the_registry() -> None:
    registry = CommandRegistry()
    make_device(SitePolicy()).controller.register(registry)
    assert {"session.open", "session.close", "session.decide"} <= set(registry.types())


# consent


async def test_consent_none_dials_at_once_and_reports_start_refusals_and_close() -> None:
    device = make_device(SitePolicy(services=SERVICES))
    session_id, answer = await open_session(device)
    assert answer == {"session_id": session_id, "state": "connecting"}
    [session] = await eventually(lambda: device.dialed)
    assert session.spec.token == TOKEN
    await eventually(lambda: device.events("session.started"))
    assert device.controller.get(session_id).state == "active"
    assert not device.events("session.approved")

    session.refuse(Refusal("forward", "10.0.0.1:22", "not in the allowlist"))
    [refused] = device.bodies("session.refused")
    assert refused == {
        "session_id": session_id,
        "kind": "forward",
        "target": "10.0.0.1:22",
        "reason": "not in the allowlist",
    }
    assert await close_session(device, session_id) == {"session_id": session_id, "state": "closed"}
    assert session.end_reasons == ["operator"]
    [closed] = device.bodies("session.closed")
    report = SessionClosedReport.model_validate(closed)
    assert report.session_id == session_id
    assert report.close_reason == "operator"
    assert (report.bytes_from_server, report.bytes_to_server) == (1234, 5678)
    assert report.started_at is not None
    assert report.ended_at is not None
    assert [r.target for r in report.refusals] == ["10.0.0.1:22"]
    assert device.controller.sessions() == []
    # The session token is a secret: in no event.
    assert all(TOKEN.encode() not in o.payload for o in device.published)


async def test_started_event_names_the_services_and_limits_in_force() -> None:
    policy = SitePolicy(services=SERVICES, max_duration_s=600, idle_timeout_s=60)
    device = make_device(policy)
    session_id, _ = await open_session(device, services=["web"], max_duration_s=120)
    [started] = await eventually(lambda: device.bodies("session.started"))
    assert started == {
        "session_id": session_id,
        "services": ["web"],
        "max_duration_s": 120.0,
        "idle_timeout_s": 60.0,
    }
    await device.controller.end(session_id)


async def test_consent_notify_dials_at_once_and_tells_the_site(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = make_device(SitePolicy(consent="notify"))
    with caplog.at_level(logging.WARNING, logger="agent.remote.sessions"):
        session_id, answer = await open_session(
            device, operator="bob", reason="fuser error\nSC-541"
        )
        assert answer["state"] == "connecting"
        await eventually(lambda: device.dialed)
    assert device.bodies("session.approved") == [
        {"session_id": session_id, "by": "policy", "consent": "notify"}
    ]
    [notice] = [r for r in caplog.records if session_id in r.getMessage()]
    assert notice.levelno == logging.WARNING
    assert "bob" in notice.getMessage()
    assert "fuser error SC-541" in notice.getMessage()  # one line, even with a newline sent
    await device.controller.end(session_id)


async def test_consent_required_waits_for_the_site_then_dials() -> None:
    device = make_device(SitePolicy(consent="required", approval_timeout_s=30))
    session_id, answer = await open_session(device)
    assert answer == {"session_id": session_id, "state": "awaiting_consent"}
    [awaiting] = await eventually(lambda: device.bodies("session.awaiting_consent"))
    assert awaiting["session_id"] == session_id
    assert awaiting["operator"] == "alice"
    assert awaiting["reason"] == "toner jam, customer on the phone"
    assert 0 < awaiting["timeout_s"] <= 30
    [listed] = device.controller.sessions()
    assert listed.describe()["state"] == "awaiting_consent"
    assert listed.describe()["operator"] == "alice"
    await asyncio.sleep(0.05)
    assert device.dialed == []  # nothing dials before the site answers

    device.controller.approve(session_id)
    await eventually(lambda: device.dialed)
    assert device.bodies("session.approved") == [
        {"session_id": session_id, "by": "site", "consent": "required", "via": "local"}
    ]
    with pytest.raises(Conflict, match="not awaiting consent"):
        device.controller.approve(session_id)
    assert await device.controller.end(session_id) == "closed"
    [closed] = device.bodies("session.closed")
    assert closed["close_reason"] == "site_ended"


async def test_consent_required_denied_never_dials() -> None:
    device = make_device(SitePolicy(consent="required"))
    session_id, _ = await open_session(device)
    await eventually(lambda: device.events("session.awaiting_consent"))
    device.controller.deny(session_id)
    await eventually(lambda: device.events("session.denied"))
    assert device.bodies("session.denied") == [
        {"session_id": session_id, "why": "denied", "via": "local"}
    ]
    await eventually(lambda: not device.controller.sessions())
    assert device.dialed == []
    assert not device.events("session.closed")


async def test_consent_required_times_out_and_never_dials() -> None:
    device = make_device(SitePolicy(consent="required", approval_timeout_s=0.05))
    session_id, _ = await open_session(device)
    await eventually(lambda: device.events("session.denied"))
    assert device.bodies("session.denied") == [{"session_id": session_id, "why": "timeout"}]
    await eventually(lambda: not device.controller.sessions())
    assert device.dialed == []
    with pytest.raises(NotFound):
        device.controller.approve(session_id)


async def test_consent_wait_never_outlasts_the_session_key() -> None:
    device = make_device(SitePolicy(consent="required", approval_timeout_s=3600))
    expires_at = utcnow() + timedelta(milliseconds=200)
    session_id, _ = await open_session(device, expires_at=isoformat_z(expires_at))
    [awaiting] = await eventually(lambda: device.bodies("session.awaiting_consent"))
    assert awaiting["timeout_s"] <= 0.2
    await eventually(lambda: device.events("session.denied"))
    assert device.bodies("session.denied") == [{"session_id": session_id, "why": "timeout"}]
    assert device.dialed == []


# refusals at the door


async def test_services_outside_the_policy_are_not_allowed() -> None:
    policy = SitePolicy(services=SERVICES, allowed_services=frozenset({"web"}))
    device = make_device(policy)
    body = open_body(services=["web", "vnc", "ssh"])
    with pytest.raises(CommandFailed) as refused:
        await device.controller.handle_open(request("session.open", body))
    assert refused.value.error == "not_allowed"
    assert refused.value.body == {"services": ["ssh", "vnc"]}
    assert device.bodies("session.denied") == [
        {"session_id": body["session_id"], "why": "not_allowed", "services": ["ssh", "vnc"]}
    ]
    assert device.controller.sessions() == []
    assert device.dialed == []


async def test_max_sessions_makes_the_device_busy() -> None:
    device = make_device(SitePolicy(consent="required", max_sessions=2))
    first, _ = await open_session(device)
    await open_session(device)
    with pytest.raises(CommandFailed) as refused:
        await open_session(device)
    assert (refused.value.error, refused.value.body) == ("busy", {"max_sessions": 2})
    # A session that ends frees its place.
    device.controller.deny(first)
    await eventually(lambda: len(device.controller.sessions()) == 1)
    _, answer = await open_session(device)
    assert answer["state"] == "awaiting_consent"
    await device.controller.shutdown()


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"session_id": "not-a-session"}, "session_id"),
        ({"ws_url": "http://example.com/"}, "ws_url"),
        ({"token": "short"}, "token"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at"),
        ({"max_duration_s": -5}, "max_duration_s"),
    ],
)
async def test_a_malformed_body_is_invalid_and_not_echoed(
    changes: dict[str, Any], where: str
) -> None:
    device = make_device(SitePolicy())
    with pytest.raises(CommandFailed) as refused:
        await device.controller.handle_open(request("session.open", open_body(**changes)))
    assert refused.value.error == "invalid"
    assert refused.value.body["detail"].startswith(where)
    assert TOKEN not in str(refused.value.body)
    assert "short" not in str(refused.value.body)


async def test_an_expired_session_key_or_a_second_open_is_refused() -> None:
    device = make_device(SitePolicy(consent="required"))
    past = isoformat_z(utcnow() - timedelta(seconds=1))
    with pytest.raises(CommandFailed) as expired:
        await open_session(device, expires_at=past)
    assert expired.value.error == "expired"
    session_id, _ = await open_session(device)
    with pytest.raises(CommandFailed) as again:
        await open_session(device, session_id=session_id)
    assert again.value.error == "already_open"
    await device.controller.shutdown()


# limits


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ({}, (3600.0, 600.0)),
        ({"max_duration_s": 60, "idle_timeout_s": 1200}, (60.0, 600.0)),
        ({"max_duration_s": 7200, "idle_timeout_s": 30}, (3600.0, 30.0)),
    ],
)
async def test_limits_are_the_smaller_of_site_and_command(
    asked: dict[str, Any], expected: tuple[float, float]
) -> None:
    device = make_device(SitePolicy(max_duration_s=3600, idle_timeout_s=600))
    session_id, _ = await open_session(device, **asked)
    [session] = await eventually(lambda: device.dialed)
    assert (session.policy.max_duration_s, session.policy.idle_timeout_s) == expected
    assert device.controller.policy.max_duration_s == 3600  # the site's own is unchanged
    await device.controller.end(session_id)


async def test_the_session_is_narrowed_to_the_services_it_names() -> None:
    device = make_device(SitePolicy(services=SERVICES))
    session_id, _ = await open_session(device, services=["vnc"])
    [session] = await eventually(lambda: device.dialed)
    assert session.policy.is_allowed("vnc")
    assert not session.policy.is_allowed("web")
    await device.controller.end(session_id)


# closing


async def test_session_close_on_a_pending_session_reports_closed_without_dialing() -> None:
    device = make_device(SitePolicy(consent="required"))
    session_id, _ = await open_session(device)
    await eventually(lambda: device.events("session.awaiting_consent"))
    answer = await close_session(device, session_id, "operator")
    assert answer == {"session_id": session_id, "state": "closed"}
    [closed] = device.bodies("session.closed")
    report = SessionClosedReport.model_validate(closed)
    assert report.close_reason == "operator"
    assert report.started_at is None
    assert (report.bytes_from_server, report.bytes_to_server) == (0, 0)
    assert device.dialed == []
    assert not device.events("session.denied")


async def test_session_close_passes_the_servers_reason_to_a_running_session() -> None:
    device = make_device(SitePolicy())
    session_id, _ = await open_session(device)
    [session] = await eventually(lambda: device.dialed)
    await eventually(lambda: device.events("session.started"))
    await close_session(device, session_id, "max_duration")
    assert session.end_reasons == ["max_duration"]
    [closed] = device.bodies("session.closed")
    assert closed["close_reason"] == "max_duration"


async def test_session_close_of_an_unknown_session_fails_cleanly() -> None:
    device = make_device(SitePolicy())
    with pytest.raises(CommandFailed) as refused:
        await close_session(device, f"ses-{new_id()}")
    assert refused.value.error == "unknown_session"
    with pytest.raises(CommandFailed) as invalid:
        await device.controller.handle_close(request("session.close", {"reason": "operator"}))
    assert invalid.value.error == "invalid"


async def test_local_end_denies_a_pending_session_and_ends_a_running_one() -> None:
    device = make_device(SitePolicy(consent="required"))
    pending, _ = await open_session(device)
    running, _ = await open_session(device)
    device.controller.approve(running)
    [session] = await eventually(lambda: device.dialed)
    await eventually(lambda: device.events("session.started"))

    assert await device.controller.end(pending) == "denied"
    assert device.bodies("session.denied") == [
        {"session_id": pending, "why": "denied", "via": "local"}
    ]
    assert await device.controller.end(running) == "closed"
    assert session.end_reasons == ["site_ended"]
    [closed] = device.bodies("session.closed")
    assert (closed["session_id"], closed["close_reason"]) == (running, "site_ended")
    with pytest.raises(NotFound, match="no session"):
        await device.controller.end(running)
    assert len(device.dialed) == 1


async def test_shutdown_ends_every_session_and_reports_each() -> None:
    device = make_device(SitePolicy(consent="required"))
    pending, _ = await open_session(device)
    running, _ = await open_session(device)
    device.controller.approve(running)
    await eventually(lambda: device.events("session.started"))
    await device.controller.shutdown()
    reports = {b["session_id"]: b["close_reason"] for b in device.bodies("session.closed")}
    assert reports == {pending: "site_ended", running: "site_ended"}
    assert device.controller.sessions() == []
    with pytest.raises(CommandFailed) as refused:
        await open_session(device)  # a stopping agent opens nothing more
    assert refused.value.error == "busy"


# every event is a valid DeviceEvent; the dispatcher answers at once


async def test_signed_session_open_is_answered_before_consent(tmp_path: Path) -> None:
    server_key = generate_command_key()
    key_file = tmp_path / "command.pub"
    key_file.write_bytes(public_key_pem(server_key))
    device = make_device(SitePolicy(consent="required", approval_timeout_s=30))
    registry = CommandRegistry()
    device.controller.register(registry)
    dispatcher = CommandDispatcher(DEVICE, key_file, None, registry)
    body = open_body()
    command = make_command(new_id(), DEVICE, utcnow(), timedelta(seconds=60), body)
    [answer] = await dispatcher.handle(dump_message(sign_command(server_key, command)))
    assert answer.topic == topics.cmd_result(DEVICE)
    result = parse_message(CommandResult, answer.payload)
    assert result.ok
    assert result.body == {"session_id": body["session_id"], "state": "awaiting_consent"}
    assert TOKEN.encode() not in answer.payload
    await device.controller.shutdown()
    assert {e.type for e in device.events()} == {"session.awaiting_consent", "session.closed"}


# a site person's decision on the web (session.decide)


async def decide(device: Device, session_id: str, verdict: str, **changes: Any) -> Any:
    body = {"session_id": session_id, "verdict": verdict, "approver": "sam", "via": "web"}
    return await device.controller.handle_decide(request("session.decide", body | changes))


async def decide_with(device: Device, session_id: str, changes: dict[str, Any]) -> Any:
    body = {"session_id": session_id, "verdict": "approve", "approver": "sam", "via": "web"}
    return await device.controller.handle_decide(request("session.decide", body | changes))


async def test_a_web_approval_narrows_the_session_and_names_the_approver() -> None:
    policy = SitePolicy(services=SERVICES, consent="required", max_duration_s=600)
    device = make_device(policy)
    session_id, _ = await open_session(device, services=["web", "vnc"])
    await eventually(lambda: device.events("session.awaiting_consent"))
    with pytest.raises(CommandFailed) as refused:
        await decide(device, session_id, "approve", services=["ssh"])
    assert (refused.value.error, refused.value.body) == ("not_allowed", {"services": ["ssh"]})
    answer = await decide(device, session_id, "approve", services=["web"], max_duration_s=60)
    assert answer == {"session_id": session_id, "verdict": "approve"}
    [session] = await eventually(lambda: device.dialed)
    assert session.policy.is_allowed("web")
    assert not session.policy.is_allowed("vnc")
    assert session.policy.max_duration_s == 60.0
    assert device.bodies("session.approved") == [
        {"session_id": session_id, "by": "site", "consent": "required", "via": "web",
         "approver": "sam"}
    ]  # fmt: skip
    with pytest.raises(CommandFailed, match="not_awaiting"):
        await decide(device, session_id, "deny")
    await device.controller.end(session_id)


async def test_a_web_denial_never_dials_and_carries_the_reason() -> None:
    device = make_device(SitePolicy(consent="required"))
    session_id, _ = await open_session(device)
    await eventually(lambda: device.events("session.awaiting_consent"))
    await decide(device, session_id, "deny", via="link", reason="ward is busy")
    await eventually(lambda: device.events("session.denied"))
    assert device.dialed == []
    assert device.bodies("session.denied") == [
        {"session_id": session_id, "why": "denied", "via": "link", "approver": "sam",
         "reason": "ward is busy"}
    ]  # fmt: skip


async def test_consent_local_takes_only_the_devices_own_approval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = make_device(SitePolicy(consent="local", approval_timeout_s=30))
    session_id, answer = await open_session(device)
    assert answer["state"] == "awaiting_consent"
    await eventually(lambda: device.events("session.awaiting_consent"))
    with caplog.at_level(logging.WARNING, logger="agent.remote.sessions"):
        with pytest.raises(CommandFailed) as refused:
            await decide(device, session_id, "approve")
    assert refused.value.error == "local_consent"
    assert "only a local approval" in caplog.text
    await asyncio.sleep(0.05)
    assert device.dialed == []
    device.controller.approve(session_id)
    await eventually(lambda: device.dialed)
    assert device.bodies("session.approved") == [
        {"session_id": session_id, "by": "site", "consent": "local", "via": "local"}
    ]
    await device.controller.end(session_id)


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"via": "local"}, "via"),  # the web never speaks for the device's own panel
        ({"approver": ""}, "approver"),
        ({"approver": "x" * 129}, "approver"),
        ({"max_duration_s": -1}, "max_duration_s"),
        ({"services": ["bad name"]}, "services.0"),
        ({"session_id": "../etc"}, "session_id"),
    ],
)
async def test_a_malformed_decision_is_refused_as_invalid(
    changes: dict[str, Any], where: str
) -> None:
    device = make_device(SitePolicy(consent="required"))
    session_id, _ = await open_session(device)
    with pytest.raises(CommandFailed) as refused:
        await decide_with(device, session_id, changes)
    assert refused.value.error == "invalid"
    assert refused.value.body["detail"].startswith(where)
    await device.controller.end(session_id)


async def test_a_decision_for_no_session_or_a_session_not_asking_is_refused() -> None:
    device = make_device(SitePolicy())
    with pytest.raises(CommandFailed, match="unknown_session"):
        await decide(device, f"ses-{new_id()}", "approve")
    session_id, _ = await open_session(device)
    with pytest.raises(CommandFailed, match="not_awaiting"):
        await decide(device, session_id, "approve")
    await device.controller.end(session_id)


async def test_a_forged_or_unsigned_decision_is_refused_by_the_dispatcher(
    tmp_path: Path,
) -> None:
    server_key = generate_command_key()
    key_file = tmp_path / "command.pub"
    key_file.write_bytes(public_key_pem(server_key))
    device = make_device(SitePolicy(consent="required", approval_timeout_s=30))
    registry = CommandRegistry()
    device.controller.register(registry)
    dispatcher = CommandDispatcher(DEVICE, key_file, None, registry)
    session_id, _ = await open_session(device)
    now = utcnow()
    body = {"session_id": session_id, "verdict": "approve", "approver": "eve", "via": "web"}

    def command() -> Command:
        return Command(
            id=new_id(), type="session.decide", issued_at=now,
            expires_at=now + timedelta(seconds=60), device_id=DEVICE, body=body,
        )  # fmt: skip

    forged = sign_command(generate_command_key(), command())
    for payload, reason in ((dump_message(forged), "bad_signature"),
                            (dump_message(command()), "unsigned")):  # fmt: skip
        answers = await dispatcher.handle(payload)
        refused = parse_message(DeviceEvent, answers[0].payload)
        assert (refused.type, refused.body["reason"]) == ("command.refused", reason)
    await asyncio.sleep(0.05)
    assert device.dialed == []
    assert device.controller.get(session_id).state == "awaiting_consent"
    [answer] = await dispatcher.handle(dump_message(sign_command(server_key, command())))
    assert parse_message(CommandResult, answer.payload).ok
    await eventually(lambda: device.dialed)
    await device.controller.shutdown()


# the real AgentSession behind the controller


# a site gateway's watched devices


async def test_a_session_to_a_watched_device_runs_under_its_web_page_policy() -> None:
    policy = SitePolicy(services=SERVICES, watched_services=frozenset({"web"}))
    device = make_device(policy, watched={"mfp-3f-east": ("192.0.2.10", {"web": 80})})
    body = open_body(device="mfp-3f-east", services=["web"])
    await device.controller.handle_open(request("session.open", body))
    session_id = body["session_id"]
    [session] = await eventually(lambda: device.dialed)
    assert session.policy.resolve_forward("web", 0) == ServiceTarget("web", "192.0.2.10", 80)
    assert not session.policy.is_allowed("vnc")  # the gateway's own service
    assert session.policy.allow_shell is False
    await device.controller.end(session_id)


async def test_a_session_to_a_device_this_agent_does_not_watch_is_not_allowed() -> None:
    device = make_device(
        SitePolicy(services=SERVICES, watched_services=frozenset({"web"})),
        watched={"mfp-3f-east": ("192.0.2.10", {})},
    )
    body = open_body(device="mfp-other")
    with pytest.raises(CommandFailed) as refused:
        await device.controller.handle_open(request("session.open", body))
    assert refused.value.error == "not_allowed"
    assert refused.value.body == {"device": "mfp-other"}
    assert device.bodies("session.denied") == [
        {"session_id": body["session_id"], "why": "not_allowed", "device": "mfp-other"}
    ]
    # A service the site does not allow on watched devices is refused like any other.
    body = open_body(device="mfp-3f-east", services=["https"])
    with pytest.raises(CommandFailed) as refused:
        await device.controller.handle_open(request("session.open", body))
    assert refused.value.body == {"services": ["https"]}
    assert device.dialed == []
