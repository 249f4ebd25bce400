"""``fieldlink agent ...``: the agent's commands.

``fieldlink agent run`` replaces its own process (same pid, so systemd and
signals see no difference) with ``python -m agent run``: the click/typer
command line would otherwise stay resident in the daemon for nothing, about
8 MB on a 30 MB budget.
"""

from __future__ import annotations

import asyncio
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


@agent_app.command("enroll")
def enroll_command(
    server: Annotated[str, typer.Option("--server", help="the center's URL (https://...)")],
    token: Annotated[
        str, typer.Option("--token", help="the one-time token from `fieldlink device add`")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="where to write keys, certificates and agent.toml")
    ] = Path("/etc/fieldlink"),
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle to verify an https server with")
    ] = None,
) -> None:
    """Make this device's key, enroll with the center, and write agent.toml."""
    from agent.enroll import enroll

    config_path = asyncio.run(enroll(server, token, directory, ca_file=ca_file))
    typer.echo(f"enrolled; configuration written to {config_path}")
    typer.echo(f"start the agent: fieldlink agent run --config {config_path}")
