"""The idle agent never loads the session stack (asyncssh, websockets): RSS budget 30 MB."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("asyncssh", "websockets")


def _loaded_after(statement: str) -> list[str]:
    probe = f"{statement}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_supervisor_daemon_and_policy_do_not_import_the_session_stack() -> None:
    assert _loaded_after("import agent.supervisor, agent.daemon, agent.policy") == []


def test_the_session_modules_do_load_it() -> None:
    # the probe would pass vacuously if the module names were wrong
    assert _loaded_after("import agent.sshd") == ["asyncssh"]
    assert _loaded_after("import agent.tunnel; import websockets.asyncio.client") == ["websockets"]
