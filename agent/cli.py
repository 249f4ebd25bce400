"""``fieldlink agent ...``: the agent's commands.

``fieldlink agent run`` replaces its own process (same pid, so systemd and
signals see no difference) with ``python -m agent run``: the click/typer
command line would otherwise stay resident in the daemon for nothing, about
8 MB on a 30 MB budget.

``fieldlink agent approve|deny|end SESSION`` and ``fieldlink agent sessions``
stand in for the device's panel: they talk to the running agent over its
local control socket (:mod:`agent.remote.control`), found through ``state_dir`` of
the same ``--config``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.cli_help import examples
from shared.translatable import N_

agent_app = typer.Typer(
    name="agent",
    help=N_("The fieldlink agent: reports device health and opens remote sessions."),
    epilog=examples(
        ("fieldlink agent enroll --server URL --token T", "once, on the device"),
        ("fieldlink agent run", "health, sessions"),
        ("fieldlink agent approve ses-…", "the site lets a session in"),
    ),
    no_args_is_help=True,
)


@agent_app.callback()
def agent_group() -> None:
    """The fieldlink agent: reports device health and opens remote sessions."""


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="agent.toml (default: $FIELDLINK_CONFIG, else /etc/fieldlink/agent.toml)",
        dir_okay=False,
    ),
]
SessionArgument = Annotated[
    str, typer.Argument(help="the session id (ses-...)", show_default=False)
]


@agent_app.command("run")
def run_command(config: ConfigOption = None) -> None:
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
    directory: Annotated[Path, typer.Option("--dir", help="where to write agent.toml")] = Path(
        "/etc/fieldlink"
    ),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="where keys, certificates and renewable files go "
            "(default: /var/lib/fieldlink-agent with the default --dir, else DIR)",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="the agent's service account, owner of the state directory and keys "
            "(default as root: fieldlink-agent if it exists)",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle to verify an https server with")
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="allow plain http:// to a server on another machine (the CA and command key "
            "pinned from its answer are then unprotected)",
        ),
    ] = False,
) -> None:
    """Make this device's key, enroll with the center, and write agent.toml."""
    from agent.identity.enroll import enroll

    config_path = asyncio.run(
        enroll(
            server,
            token,
            directory,
            ca_file=ca_file,
            state_dir=state_dir,
            user=user,
            insecure_http=insecure_http,
        )
    )
    typer.echo(f"enrolled; configuration written to {config_path}")
    typer.echo(f"start the agent: fieldlink agent run --config {config_path}")


@agent_app.command("shell-helper")
def shell_helper_command(
    config: ConfigOption = None,
    agent_user: Annotated[
        str, typer.Option("--agent-user", help="the only account allowed to ask for shells")
    ] = "fieldlink-agent",
    socket_path: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            help="listen here (default: the socket systemd passes, else "
            "/run/fieldlink-agent-shell.sock)",
        ),
    ] = None,
    session_cgroups: Annotated[
        bool,
        typer.Option(
            "--session-cgroups",
            help="one cgroup per session under the helper's own (systemd, Delegate=yes)",
        ),
    ] = False,
    max_shells: Annotated[
        int, typer.Option("--max-shells", min=1, help="shells running at once; more are refused")
    ] = 64,
) -> None:
    """Run the privileged shell helper (as root): starts maintenance shells for the agent."""
    from agent.remote.shellhelper import run_helper

    run_helper(
        config,
        agent_user=agent_user,
        socket_path=socket_path,
        session_cgroups=session_cgroups,
        max_shells=max_shells,
    )


def _control(config: Path | None, op: str, session_id: str | None = None) -> dict[str, Any]:
    from agent.config import load_agent_settings, resolve_config_path
    from agent.remote.control import control_socket_path, request

    settings = load_agent_settings(resolve_config_path(config))
    return request(control_socket_path(settings.state_dir), op, session_id)


@agent_app.command("approve")
def approve_command(session: SessionArgument, config: ConfigOption = None) -> None:
    """Approve a remote session awaiting this site's consent: the agent dials the server."""
    _control(config, "approve", session)
    typer.echo(f"session {session} approved: the agent is connecting")


@agent_app.command("deny")
def deny_command(session: SessionArgument, config: ConfigOption = None) -> None:
    """Deny a remote session awaiting this site's consent: it never connects."""
    _control(config, "deny", session)
    typer.echo(f"session {session} denied")


@agent_app.command("end")
def end_command(session: SessionArgument, config: ConfigOption = None) -> None:
    """End a remote session now (one still awaiting consent is denied)."""
    answer = _control(config, "end", session)
    state = answer.get("state")
    if state == "denied":
        typer.echo(f"session {session} denied (it was awaiting consent)")
    elif state == "closing":
        typer.echo(f"session {session} is ending")
    else:
        typer.echo(f"session {session} ended")


@agent_app.command("sessions")
def sessions_command(config: ConfigOption = None) -> None:
    """List the remote sessions this device holds (awaiting consent, connecting, active)."""
    answer = _control(config, "sessions")
    sessions = answer.get("sessions") or []
    if not sessions:
        typer.echo("no remote sessions")
        return
    for item in sessions:
        operator = _printable(item.get("operator")) or "-"
        reason = _printable(item.get("reason")) or "-"
        typer.echo(
            f"{item.get('session_id')}  {item.get('state'):<16}  since {item.get('since')}  "
            f"by {operator}: {reason}"
        )


def _printable(value: object) -> str:
    # Operator and reason come from the server: no control characters on the terminal.
    return "".join(ch if ch.isprintable() else " " for ch in str(value or "")).strip()
