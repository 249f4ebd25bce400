"""No library warning ever reaches a user's terminal through ``fieldlink``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.cli import app

CODE = """
import sys, warnings
from shared.logs import quiet_library_warnings
quiet_library_warnings()
warnings.warn("a library's deprecation notice", DeprecationWarning, stacklevel=1)
warnings.warn("a library's user warning", UserWarning, stacklevel=1)
print("done")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}


def test_library_warnings_are_kept_off_the_terminal() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import sys; sys.warnoptions.clear()\n" + CODE],
        capture_output=True, text=True, env=_env(), check=True,
    )  # fmt: skip
    assert result.stdout == "done\n"
    assert result.stderr == ""


def test_a_user_who_asks_for_warnings_still_gets_them() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", CODE],
        capture_output=True, text=True, env=_env(), check=True,
    )  # fmt: skip
    assert "deprecation notice" in result.stderr


#: One command per package and heavy import (asyncssh, cryptography, the server's app).
COMMANDS = ["agent", "server", "ssh", "ca", "kpi", "demo", "simulate"]


def test_the_sampled_commands_exist() -> None:
    import typer

    group = typer.main.get_command(app)
    assert set(COMMANDS) <= set(group.list_commands(None))  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_prints_nothing_on_stderr(command: str) -> None:
    args = [sys.executable, "-m", "shared", *([command] if command else []), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, env=_env(), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
