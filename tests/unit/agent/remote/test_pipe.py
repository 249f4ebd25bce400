"""The pipe between the agent and a session process: its messages, bad input, the key ledger."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from agent.remote import pipe
from agent.remote.outcome import Refusal, SessionOutcome
from agent.remote.policy import SitePolicy
from shared.ids import utcnow


def policy() -> SitePolicy:
    return SitePolicy.from_config(
        services={"web": "127.0.0.1:80", "vnc": "[::1]:5900"},
        policy={
            "services": ["web"],
            "consent": "notify",
            "max_duration_s": 60,
            "idle_timeout_s": 30,
            "sftp_folders": {"logs": "/var/log"},
            "shell_helper": "/run/fieldlink-agent-shell.sock",
        },
    )


def start() -> pipe.StartSession:
    return pipe.StartSession(
        session_id="ses-1",
        ws_url="wss://center.example/api/v1/tunnel/ses-1",
        token="t" * 32,
        client_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2 x",
        expires_at=utcnow() + timedelta(minutes=5),
        policy=policy(),
        host_key_path=Path("/var/lib/fieldlink-agent/ssh_host_ed25519_key"),
        proxy="http://proxy:3128",
        ca_file=Path("/var/lib/fieldlink-agent/ca.pem"),
        connect_timeout_s=7.5,
        used_keys={"SHA256:abc": utcnow() + timedelta(minutes=1)},
    )


def test_the_start_message_carries_the_session_and_its_policy_unchanged() -> None:
    sent = start()
    line = pipe.encode(sent.to_message())
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    received = pipe.StartSession.from_message(pipe.decode(line))
    assert received == sent
    assert received.policy.is_allowed("web")
    assert not received.policy.is_allowed("vnc")
    # The token crosses the pipe but is never in a repr (logs).
    assert sent.token not in repr(sent)


@pytest.mark.parametrize("proxy", [True, None, "http://p:1"])
def test_every_proxy_setting_crosses(proxy: Any) -> None:
    sent = dataclasses.replace(start(), proxy=proxy)
    assert pipe.StartSession.from_message(pipe.decode(pipe.encode(sent.to_message()))) == sent


def test_an_outcome_crosses_with_its_refusals_capped() -> None:
    refusals = [Refusal("forward", f"db:{n}", "not in the allowlist") for n in range(80)]
    sent = SessionOutcome(
        "ses-1", "idle_timeout", "idle", 10, 20, utcnow(), utcnow(), refusals=refusals
    )
    received = pipe.read_outcome("ses-1", pipe.decode(pipe.encode(pipe.outcome_message(sent))))
    assert received.close_reason == "idle_timeout"
    assert (received.bytes_from_server, received.bytes_to_server) == (10, 20)
    assert received.started_at == sent.started_at
    assert received.refusals == refusals[: pipe.MAX_OUTCOME_REFUSALS]


@pytest.mark.parametrize(
    "line",
    [b"", b"not json\n", b"[1]\n", b'{"no": "type"}\n', b'{"type": 3}\n', b"\xff\xfe\n"],
)
def test_a_line_that_is_not_a_message_is_refused(line: bytes) -> None:
    with pytest.raises(pipe.PipeError):
        pipe.decode(line)


def _session(**changes: Any) -> dict[str, Any]:
    return {"type": "start", "session": {**start().to_message()["session"], **changes}}


@pytest.mark.parametrize(
    "message",
    [
        {"type": "end"},
        {"type": "start"},
        {"type": "start", "session": {"session_id": "ses-1"}},
        _session(proxy=5),
        _session(expires_at=1),
        _session(expires_at="2030-01-01T00:00:00"),  # no offset
        _session(policy={"services": "all"}),
    ],
)
def test_a_malformed_start_is_refused(message: dict[str, Any]) -> None:
    with pytest.raises(pipe.PipeError):
        pipe.StartSession.from_message(message)


def test_a_forged_outcome_cannot_invent_a_close_reason_or_a_refusal_kind() -> None:
    good = pipe.outcome_message(SessionOutcome("ses-1", "operator"))
    assert pipe.read_outcome("ses-1", good).close_reason == "operator"
    bad_refusal = {"kind": "x", "target": "", "reason": ""}
    for forged in (
        {**good, "close_reason": "hacked"},
        {**good, "refusals": [bad_refusal]},
        {**good, "bytes_to_server": "many"},
        {"type": "outcome"},
    ):
        with pytest.raises(pipe.PipeError):
            pipe.read_outcome("ses-1", forged)
    with pytest.raises(pipe.PipeError):
        pipe.read_refusal({"kind": "forward", "target": 1, "reason": "r"})


def test_the_fingerprint_is_asyncssh_s_own_without_asyncssh() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    openssh = key.export_public_key().decode().strip()
    assert pipe.key_fingerprint(openssh) == key.get_fingerprint()
    assert pipe.key_fingerprint("ssh-ed25519") is None
    assert pipe.key_fingerprint("ssh-ed25519 !!!notbase64") is None


def test_the_ledger_makes_a_key_single_use_across_session_processes() -> None:
    ledger = pipe.KeyLedger()
    expires = utcnow() + timedelta(minutes=5)
    assert ledger.reserve("SHA256:a", expires) == {}
    # A second session with the same key while the first holds it: marked used.
    assert ledger.reserve("SHA256:a", expires) == {"SHA256:a": expires}
    ledger.release("SHA256:a")
    ledger.claim("SHA256:a", expires)
    ledger.release("SHA256:a")
    assert ledger.is_used("SHA256:a")
    assert ledger.reserve("SHA256:a", expires) == {"SHA256:a": expires}
    ledger.release("SHA256:a")
    # A key that never authenticated is free again once its session has ended.
    assert ledger.reserve("SHA256:b", expires) == {}
    ledger.release("SHA256:b")
    assert ledger.reserve("SHA256:b", expires) == {}
    # An expired claim is forgotten.
    ledger.claim("SHA256:c", utcnow() - timedelta(seconds=1))
    assert not ledger.is_used("SHA256:c")
    assert ledger.reserve(None, expires) == {}
    ledger.release(None)


def test_a_watched_devices_policy_crosses_without_its_shell() -> None:
    import dataclasses

    watched = dataclasses.replace(start(), policy=policy().for_watched("192.0.2.10"))
    received = pipe.StartSession.from_message(pipe.decode(pipe.encode(watched.to_message())))
    assert received.policy.allow_shell is False
    assert received.policy == watched.policy
    # A message without the flag (an older agent's) never grants a shell it did not say.
    message = watched.to_message()
    del message["session"]["policy"]["allow_shell"]
    assert pipe.StartSession.from_message(message).policy.allow_shell is False
