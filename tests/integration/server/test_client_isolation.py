"""The operator's client runs with the ``client`` extra alone: none of the server's dependencies.

Each check runs the real ``fieldlink`` entry point in a fresh interpreter in which
a meta-path finder refuses to import the server's (and the agent's) dependencies,
as a laptop with ``pip install 'fieldlink[client]'`` would. The import-linter
contract in pyproject.toml says the same of the code; this proves it at run time,
through the entry points and the lazy imports the contract cannot follow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# What `fieldlink[client]` does not install: the server's and the agent's dependencies.
NOT_INSTALLED = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "argon2",
    "jinja2",
    "aiomqtt",
    "paho",
    "asyncssh",
    "prometheus_client",
    "cryptography",
    "psutil",
)

RUNNER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    NOT_INSTALLED = set(sys.argv[1].split(","))


    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in NOT_INSTALLED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, NotInstalled())
    try:
        import sqlmodel  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the block does not work: sqlmodel imported")
    if sys.argv[2] == "--import":
        import importlib

        for name in sys.argv[3:]:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.partition(".")[0] in NOT_INSTALLED)
        server = sorted(
            m for m in sys.modules if m.startswith("server.") and not m.startswith("server.client")
        )
        print(leaked + server)
        raise SystemExit(0)
    from shared.cli import main

    sys.argv = ["fieldlink", *sys.argv[2:]]
    main()
    """
)

CLIENT_MODULES = [
    "server.client",
    "server.client.api",
    "server.client.account",
    "server.client.sessions",
    "server.client.sockets",
    "server.client.terminal",
]


def without_server(*args: str, credentials: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    env["FIELDLINK_CREDENTIALS"] = str(credentials or "/nonexistent/credentials.json")
    return subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(NOT_INSTALLED), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_client_modules_import_without_the_server_and_pull_none_of_it_in() -> None:
    done = without_server("--import", *CLIENT_MODULES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command", ["login", "passwd", "devices", "session", "exec", "connect", "ssh"]
)
def test_every_operator_command_answers_help_without_the_server(command: str) -> None:
    done = without_server(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "not installed here" not in done.stdout
    assert "Usage: fieldlink" in done.stdout


def test_an_operator_command_reaches_for_the_server_over_http_only(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"server": "http://127.0.0.1:1", "token": "t"}))
    done = without_server("devices", credentials=credentials)
    assert done.returncode == 6  # unavailable
    assert done.stderr.startswith("error: cannot reach http://127.0.0.1:1")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_center_command_without_the_server_extra_says_which_to_install() -> None:
    done = without_server("user", "list")
    assert done.returncode == 6  # unavailable: the extra is not installed
    assert done.stderr.startswith("error: 'fieldlink user' needs the server extra")
    assert "pip install 'fieldlink[server]'" in done.stderr
