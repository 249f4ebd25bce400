"""``fieldlink agent ...``: the agent's commands.

``fieldlink agent run`` replaces its own process (same pid, so systemd and
signals see no difference) with ``python -m agent run``: the click/typer
command line would otherwise stay resident in the daemon for nothing, about
8 MB on a 30 MB budget.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

agent_app = typer.Typer(
    name="agent",
    help="The fieldlink agent: reports device health and opens remote sessions.",
    no_args_is_help=True,
)


@agent_app.callback()
def agent_group() -> None:
    """The fieldlink agent: reports device health and opens remote sessions."""


@agent_app.command("run")
def run_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="agent.toml (default: $FIELDLINK_CONFIG, else /etc/fieldlink/agent.toml)",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Run the agent daemon until SIGTERM or SIGINT."""
    argv = [sys.executable, "-m", "agent", "run"]
    if config is not None:
        argv += ["--config", str(config)]
    # Fewer glibc malloc arenas for the daemon's few threads: about 0.5 MB less resident.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, fixed arguments


# Enrollment lives in agent/enroll.py (its own engineer); register it when present.
if importlib.util.find_spec("agent.enroll") is not None:
    from agent.enroll import enroll_command  # type: ignore[import-not-found,unused-ignore]

    agent_app.command("enroll")(enroll_command)
