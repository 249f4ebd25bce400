"""The ``fieldlink`` command, assembled from the command groups packages register.

``agent``, ``server`` and ``provisioning`` each register their top-level
commands as entry points in the group ``fieldlink.commands``. A command's
module is imported only when that command runs, so ``fieldlink agent run`` on
a device never imports the server, and a command whose extra is not installed
says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import logging
import sys
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click
import typer
from typing_extensions import override

from shared import __version__
from shared.errors import FieldlinkError

GROUP = "fieldlink.commands"
# Which extra provides the commands of each package.
_EXTRA_OF_PACKAGE = {"agent": "agent", "server": "server", "provisioning": "server"}
logger = logging.getLogger(__name__)


def _as_click(obj: Any, name: str) -> click.Command:
    if isinstance(obj, click.Command):
        return obj
    if isinstance(obj, typer.Typer):
        command = typer.main.get_command(obj)
        command.name = name
        return command
    if callable(obj):
        app = typer.Typer()
        app.command(name)(obj)
        return typer.main.get_command(app)
    msg = f"entry point {name!r} is not a command"
    raise TypeError(msg)


def _missing_extra(name: str, ep: EntryPoint, exc: ImportError) -> click.Command:
    extra = _EXTRA_OF_PACKAGE.get(ep.value.split(".", 1)[0], "server")
    missing = exc.name or "a dependency"

    @click.command(
        name=name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"(needs: pip install 'fieldlink[{extra}]')",
        add_help_option=False,
    )
    def unavailable() -> None:
        click.echo(
            f"error: 'fieldlink {name}' needs the {extra} extra ({missing} is not installed): "
            f"pip install 'fieldlink[{extra}]'",
            err=True,
        )
        sys.exit(3)

    return unavailable


class FieldlinkCLI(click.Group):
    """A click group whose subcommands come from entry points, loaded on first use."""

    @cached_property
    def _entry_points(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=GROUP)}

    @override
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._entry_points) | set(self.commands))

    @override
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        ep = self._entry_points.get(cmd_name)
        if ep is None:
            return None
        try:
            command = _as_click(ep.load(), cmd_name)
        except ImportError as exc:
            command = _missing_extra(cmd_name, ep, exc)
        self.commands[cmd_name] = command
        return command

    @override
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FieldlinkError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(130)


@click.group(cls=FieldlinkCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fieldlink")
def cli() -> None:
    """fieldlink: remote maintenance for installed equipment."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fieldlink")
