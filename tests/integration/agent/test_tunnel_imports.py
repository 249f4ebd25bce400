"""The idle agent never loads the session stack (asyncssh, websockets): RSS budget 30 MB."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("asyncssh", "websockets")


def _loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    probe = (
        f"{statement}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_supervisor_daemon_and_policy_do_not_import_the_session_stack() -> None:
    assert _loaded_after("import agent.supervisor, agent.daemon, agent.remote.policy") == []


def test_an_agent_ready_for_sessions_loads_neither_the_stack_nor_pydantic() -> None:
    # The controller and the control channel are loaded by every agent; what a
    # session needs comes with the first one (pydantic never: agent.remote.session_bodies).
    statement = (
        "import agent.remote.sessions, agent.remote.control\n"
        "from pathlib import Path\n"
        "from shared.broker_url import BrokerAddress\n"
        "from agent.health.outbox import MemoryOutbox\n"
        "from agent.remote.policy import SitePolicy\n"
        "from agent.supervisor import Agent\n"
        "a = Agent('d-1', BrokerAddress('127.0.0.1', 1, False), [], MemoryOutbox(1))\n"
        "a.enable_sessions(SitePolicy(), host_key_path=Path('k'), control_socket=Path('s'))\n"
    )
    assert _loaded_after(statement, (*HEAVY, "pydantic")) == []


def test_the_session_modules_do_load_it() -> None:
    # the probe would pass vacuously if the module names were wrong
    assert _loaded_after("import agent.remote.sshd") == ["asyncssh"]
    assert _loaded_after("import agent.remote.tunnel; import websockets.asyncio.client") == [
        "websockets"
    ]


def test_the_agent_side_of_a_session_process_is_standard_library_only() -> None:
    # The agent starts and reads session processes; the SSH stack lives in them alone.
    statement = "import agent.remote.session_process, agent.remote.pipe, agent.remote.outcome"
    assert _loaded_after(statement, (*HEAVY, "pydantic", "cryptography")) == []
    assert _loaded_after(
        "import agent.remote.session_main, agent.remote.sshd", (*HEAVY, "cryptography")
    ) == ["asyncssh", "cryptography"]
