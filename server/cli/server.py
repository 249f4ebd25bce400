"""``fieldlink server run|init-config``: the server process and its sample configuration."""

from __future__ import annotations

import asyncio

import typer

from server.cli.common import ConfigOption
from server.cli.notify import notify_app
from server.config import load_server_settings
from server.config_sample import init_config
from shared.cli_help import examples
from shared.translatable import N_

server_app = typer.Typer(
    help=N_("Run the fieldlink server."),
    epilog=examples(
        ("fieldlink server init-config -o server.toml", "a commented configuration"),
        ("fieldlink server run --config server.toml", "serve API, console, ingest"),
        ("fieldlink ca init --config server.toml", "before the first devices"),
    ),
    no_args_is_help=True,
)
server_app.command("init-config")(init_config)
server_app.add_typer(notify_app, name="notify")


@server_app.command("run")
def run(config: ConfigOption = None) -> None:
    """Run the server: HTTP API and console, ingest, sessions."""
    from server.notify.worker import check_notify
    from server.runner import serve
    from shared.logs import configure_logging

    settings = load_server_settings(config)
    check_notify(settings)  # a bad notification rule: one line, before anything starts
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
