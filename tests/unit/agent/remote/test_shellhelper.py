"""The shell helper's request, the policy keys that configure it, and enrollment's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.identity.enroll import DEFAULT_DIR, DEFAULT_STATE_DIR, EnrollmentFailed, identity_layout
from agent.identity.enroll import _enroll_url as enroll_url
from agent.remote.policy import DEFAULT_SHELL_USER, SitePolicy
from agent.remote.shellaccount import check_config_file
from agent.remote.shellrequest import ShellHelperError, ShellRequest, start_session
from shared.errors import ConfigError


def test_a_request_round_trips() -> None:
    request = ShellRequest("ses-1", command="uptime", pty=True, term="xterm", cols=90, rows=30)
    assert ShellRequest.decode(request.encode().rstrip(b"\n")) == request


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "session_id": "ses-1"}',
        b'{"v": 1}',
        b'{"v": 1, "session_id": "../../etc"}',
        b'{"v": 1, "session_id": "ses-1", "user": "root"}',
        b'{"v": 1, "session_id": "ses-1", "env": {"LD_PRELOAD": "/tmp/x.so"}}',
        b'{"v": 1, "session_id": "ses-1", "command": "a\\u0000b"}',
        b'{"v": 1, "session_id": "ses-1", "command": 7}',
        b'{"v": 1, "session_id": "ses-1", "pty": "yes"}',
        b'{"v": 1, "session_id": "ses-1", "pty": true, "term": "xterm\\nPATH=/tmp"}',
        b'{"v": 1, "session_id": "ses-1", "cols": -1}',
        b'{"v": 1, "session_id": "ses-1", "rows": true}',
        b'{"v": 1, "session_id": "ses-1", "command": "' + b"x" * 9000 + b'"}',
    ],
)
def test_anything_but_a_well_formed_request_is_refused(line: bytes) -> None:
    with pytest.raises(ShellHelperError):
        ShellRequest.decode(line)


def test_term_is_dropped_without_a_terminal() -> None:
    request = ShellRequest.decode(b'{"v": 1, "session_id": "ses-1", "term": "xterm"}')
    assert request.term is None


def test_the_policy_names_the_helper_and_the_account() -> None:
    default = SitePolicy.from_config()
    assert (default.shell_helper, default.shell_user) == (None, DEFAULT_SHELL_USER)
    policy = SitePolicy.from_config(
        policy={"shell_helper": "/run/fieldlink-agent-shell.sock", "shell_user": "maint"}
    )
    assert policy.shell_helper == Path("/run/fieldlink-agent-shell.sock")
    assert policy.shell_user == "maint"


@pytest.mark.parametrize(
    "table",
    [
        {"shell_helper": "relative.sock"},
        {"shell_user": "root; rm"},
        {"shell_user": "../etc"},
        {"shell_user": 0},
    ],
)
def test_bad_helper_settings_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SitePolicy.from_config(policy=table)


def test_the_helper_refuses_a_configuration_others_may_write(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\n")
    config.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by root only"):
        check_config_file(config)


def test_the_identity_goes_to_the_state_directory() -> None:
    assert identity_layout(DEFAULT_DIR, None) == (DEFAULT_STATE_DIR, DEFAULT_STATE_DIR)
    assert identity_layout(Path("/srv/dev"), None) == (Path("/srv/dev/state"), Path("/srv/dev"))
    assert identity_layout(Path("/srv/dev"), Path("/var/x")) == (Path("/var/x"), Path("/var/x"))


def test_plain_http_is_refused_for_a_remote_server_only() -> None:
    with pytest.raises(EnrollmentFailed, match="--insecure-http"):
        enroll_url("http://fieldlink.example.com:8000")
    assert enroll_url("http://fieldlink.example.com", insecure_http=True).endswith("/enroll")
    assert enroll_url("http://127.0.0.1:8000").startswith("http://127.0.0.1")
    assert enroll_url("http://[::1]:8000").startswith("http://[::1]")
    assert enroll_url("https://fieldlink.example.com").startswith("https://")


async def test_a_missing_helper_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShellHelperError, match=r"cannot reach the shell helper at .*absent\.sock"):
        await start_session(tmp_path / "absent.sock", ShellRequest("ses-1", command="id"))
