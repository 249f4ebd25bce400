"""The ``fieldlink`` command, assembled from the command groups packages register.

``agent``, ``server`` and ``provisioning`` each register their top-level
commands as entry points in the group ``fieldlink.commands``. A command's
module is imported only when that command runs, so ``fieldlink agent run`` on
a device never imports the server, and a command whose extra is not installed
says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typing_extensions import override

from shared import __version__
from shared.errors import FieldlinkError
from shared.logs import quiet_library_warnings

GROUP = "fieldlink.commands"
# Which extra provides the commands of each package (the longest matching prefix wins).
_EXTRA_OF_PACKAGE = {
    "agent": "agent",
    "server": "server",
    "server.client": "client",
    "provisioning": "server",
}


def _extra_of(module: str) -> str:
    """The extra that installs an entry point's module (``server.client.api`` -> client)."""
    parts = module.split(":", 1)[0].split(".")
    for end in range(len(parts), 0, -1):
        extra = _EXTRA_OF_PACKAGE.get(".".join(parts[:end]))
        if extra is not None:
            return extra
    return "server"


def _as_command(obj: Any, name: str) -> Any:
    """A typer command object for an entry point's value: a Typer app or a function."""
    if isinstance(obj, typer.Typer):
        if obj.registered_callback is None:
            # Without a callback typer collapses a one-command app into that command.
            obj.callback()(lambda: None)
        return typer.main.get_command(obj)
    if callable(obj):
        app = typer.Typer(add_completion=False)
        app.command(name)(obj)
        return typer.main.get_command(app)
    msg = f"entry point {name!r} is neither a Typer app nor a function"
    raise TypeError(msg)


def _missing_extra(name: str, ep: EntryPoint, exc: ImportError) -> Any:
    extra = _extra_of(ep.value)
    missing = exc.name or "a dependency"
    app = typer.Typer(add_completion=False)

    @app.command(
        name,
        help=f"(not installed here: pip install 'fieldlink[{extra}]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    def unavailable() -> None:
        typer.echo(
            f"error: 'fieldlink {name}' needs the {extra} extra ({missing} is not installed): "
            f"pip install 'fieldlink[{extra}]'",
            err=True,
        )
        raise typer.Exit(3)

    return typer.main.get_command(app)


class FieldlinkCLI(TyperGroup):
    """The top-level group: subcommands come from entry points, loaded on first use."""

    @cached_property
    def _entry_points(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=GROUP)}

    @override
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(set(self._entry_points) | set(self.commands))

    @override
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        ep = self._entry_points.get(cmd_name)
        if ep is None:
            return None
        try:
            command = _as_command(ep.load(), cmd_name)
        except ImportError as exc:
            command = _missing_extra(cmd_name, ep, exc)
        command.name = cmd_name
        self.commands[cmd_name] = command
        return command

    @override
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FieldlinkError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=FieldlinkCLI,
    name="fieldlink",
    help="fieldlink: remote maintenance for installed equipment.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fieldlink {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """fieldlink: remote maintenance for installed equipment."""


def main() -> None:
    """Console-script entry point."""
    quiet_library_warnings()
    app(prog_name="fieldlink")


if __name__ == "__main__":
    main()
