"""The agent's control channel from other processes: the real `fieldlink agent` commands
over the socket, and a process of another uid refused by the peer check.

Moved from tests/unit (they start the CLI and a probe as child processes)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from shared.ids import new_id
from tests.fixtures.agent_control import (
    DEVICE,
    Agent,
    agent_fixture,  # noqa: F401 - the `agent` fixture
    running,
)

pytestmark = pytest.mark.integration


def _open_to_everyone(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o666 if path.is_socket() else 0o755)


def _python_for_nobody() -> str:
    # The test's own interpreter may live under /root; the probe needs no project code.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            return candidate
    pytest.skip("no system python3 another user can run")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
async def test_a_peer_of_another_uid_is_refused() -> None:
    # Even if the socket were reachable (permissions loosened here on purpose),
    # SO_PEERCRED keeps another user out.
    base = Path(tempfile.mkdtemp(prefix="fieldlink-control-"))
    try:
        async with running(base / "state") as agent:
            await agent.open()
            _open_to_everyone(base, agent.state_dir, agent.path)
            probe = (
                "import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "try:\n"
                '    s.sendall(b\'{"op":"sessions"}\\n\')\n'
                "except OSError:\n"
                "    pass\n"  # refused before it was read: the answer is there all the same
                "sys.stdout.write(s.makefile().readline())\n"
            )
            child = await asyncio.create_subprocess_exec(
                _python_for_nobody(), "-I", "-c", probe, str(agent.path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                user=65534, group=65534, cwd="/",
            )  # fmt: skip
            out, err = await asyncio.wait_for(child.communicate(), 30)
            assert child.returncode == 0, err
            answer = json.loads(out)
            assert answer["ok"] is False
            assert answer["error"] == "forbidden"
            assert "session_id" not in out.decode()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# the command line


async def fieldlink(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def agent_toml(directory: Path, state_dir: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agent.toml"
    config.write_text(f'[agent]\ndevice_id = "{DEVICE}"\nstate_dir = "{state_dir}"\n')
    return config


async def test_cli_acts_on_the_running_agent_with_one_line_each(
    tmp_path: Path, agent: Agent
) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    code, out, err = await fieldlink("agent", "sessions", "--config", str(config))
    assert (code, out, err) == (0, "no remote sessions\n", "")

    session_id = await agent.open(operator="alice", reason="toner\x1b[2J jam")
    code, out, _ = await fieldlink("agent", "sessions", "--config", str(config))
    assert code == 0
    [line] = out.splitlines()
    assert session_id in line
    assert "awaiting_consent" in line
    assert "alice" in line
    assert "\x1b" not in line  # no terminal escapes from the server's text

    code, out, err = await fieldlink("agent", "approve", session_id, "--config", str(config))
    assert code == 0, err
    assert out == f"session {session_id} approved: the agent is connecting\n"

    code, out, err = await fieldlink("agent", "end", session_id, "--config", str(config))
    assert code == 0, err
    assert out == f"session {session_id} ended\n"


async def test_cli_deny_and_end_of_a_pending_session(tmp_path: Path, agent: Agent) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    denied = await agent.open()
    pending = await agent.open()
    code, out, _ = await fieldlink("agent", "deny", denied, "--config", str(config))
    assert (code, out) == (0, f"session {denied} denied\n")
    code, out, _ = await fieldlink("agent", "end", pending, "--config", str(config))
    assert (code, out) == (0, f"session {pending} denied (it was awaiting consent)\n")
    assert agent.dialed == []


async def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path, agent: Agent) -> None:
    config = agent_toml(tmp_path, agent.state_dir)
    unknown = f"ses-{new_id()}"
    code, out, err = await fieldlink("agent", "approve", unknown, "--config", str(config))
    assert code != 0
    assert out == ""
    assert err == f"error: no session {unknown} on this device\n"

    session_id = await agent.open()
    await agent.ask("approve", session_id)
    code, _, err = await fieldlink("agent", "deny", session_id, "--config", str(config))
    assert code != 0
    assert len(err.splitlines()) == 1
    assert "is not awaiting consent" in err

    stopped = agent_toml(tmp_path / "elsewhere", tmp_path / "no-agent-here")
    for args in (("end", unknown), ("sessions",)):
        code, out, err = await fieldlink("agent", *args, "--config", str(stopped))
        assert code != 0
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("error: the agent is not running")

    code, _, err = await fieldlink("agent", "end", "--config", str(config))
    assert code != 0
    assert "Traceback" not in err
