"""The ``fieldlink`` command, assembled from the command groups packages register.

``agent``, ``server`` and ``provisioning`` each register their top-level
commands as entry points in the group ``fieldlink.commands``. A command's
module is imported only when that command runs, so ``fieldlink agent run`` on
a device never imports the server, and a command whose extra is not installed
says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from functools import cache, cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any, Final

import typer
from typer._click.core import Command
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup
from typing_extensions import override

from shared import __version__, exit_codes
from shared.cli_help import examples
from shared.cli_language import N_, tr
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


def _said(text: str | None) -> str | None:
    """A help text in the reader's language (as written when the catalog lacks it)."""
    return tr(text) if text else text


#: Marks the command classes :func:`in_reader_language` made.
_MARK: Final = "_fieldlink_reader_language"


@contextmanager
def reader_language(command: Command) -> Iterator[None]:
    """While formatting ``--help``: the help texts of ``command``, its parameters and its
    subcommands in the reader's language (:func:`shared.cli_language.tr`), as written after.

    Typer builds the texts at import, in English; the language is read here, as the help is
    shown, so that a process (a test) that changes ``LANG`` between invocations is followed.
    The texts are marked for the catalog with ``N_`` where they are written.
    """
    owners: list[Any] = [command, *command.params, *getattr(command, "commands", {}).values()]
    # (click's plain arguments have no help: only what has one is changed)
    saved = [
        (owner, getattr(owner, "help", None), getattr(owner, "short_help", None))
        for owner in owners
    ]
    try:
        for owner, help_, short in saved:
            if help_ is not None:
                owner.help = _said(help_)
            if short is not None:
                owner.short_help = _said(short)
        yield
    finally:
        for owner, help_, short in saved:
            if help_ is not None:
                owner.help = help_
            if short is not None:
                owner.short_help = short


@cache
def _in_reader_language(cls: type[Command]) -> type[Command]:
    """A subclass of ``cls`` whose ``--help`` is in the reader's language."""

    def format_help(self: Command, ctx: Any, formatter: HelpFormatter) -> None:
        with reader_language(self):
            cls.format_help(self, ctx, formatter)

    return type(cls.__name__, (cls,), {"__slots__": (), "format_help": format_help, _MARK: True})


def in_reader_language(command: Command) -> Command:
    """``command`` and its subcommands, their ``--help`` shown in the reader's language.

    Every command of the entry points gets this: typer has built the objects, so each is
    given a subclass of its own class (typer's, or a package's own ``cls=``) that formats
    the help in the language read as it is shown; nothing else about it changes.
    """
    if not getattr(type(command), _MARK, False):
        command.__class__ = _in_reader_language(type(command))
    for sub in getattr(command, "commands", {}).values():
        in_reader_language(sub)
    return command


def _as_command(obj: Any, name: str) -> Any:
    """A typer command object for an entry point's value: a Typer app or a function."""
    if isinstance(obj, typer.Typer):
        if obj.registered_callback is None:
            # Without a callback typer collapses a one-command app into that command.
            obj.callback()(lambda: None)
        return in_reader_language(typer.main.get_command(obj))
    if callable(obj):
        app = typer.Typer(add_completion=False)
        app.command(name)(obj)
        return in_reader_language(typer.main.get_command(app))
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
            tr(
                "error: 'fieldlink %(command)s' needs the %(extra)s extra (%(missing)s is not "
                "installed): pip install 'fieldlink[%(extra)s]'",
                command=name,
                extra=extra,
                missing=missing,
            ),
            err=True,
        )
        raise typer.Exit(exit_codes.UNAVAILABLE)

    return typer.main.get_command(app)


def purpose(command: Command) -> str:
    """A command's whole one-line purpose: the first sentence of its help, never cut short."""
    text = command.short_help or command.help or ""
    paragraph = " ".join(text.split("\n\n", 1)[0].split())
    end = re.search(r"[.;:!?](\s|$)|。", paragraph)
    sentence = (
        paragraph[: end.start() + 1] if end and paragraph[end.start()] in ".。" else paragraph
    )
    return sentence.removeprefix("\b ").strip()


#: Click's usage errors (English, its own words) and the same in the reader's language.
_CLICK_MESSAGES: Final = (
    (
        re.compile(r"No such command (?P<name>'[^']*')\. Did you mean (?P<guess>'[^']*')\?"),
        N_("No such command %(name)s. Did you mean %(guess)s?"),
    ),
    (re.compile(r"No such command (?P<name>'.*')\.?"), N_("No such command %(name)s.")),
    (
        re.compile(r"No such option: (?P<name>\S+) Did you mean (?P<guess>\S+)\?"),
        N_("No such option: %(name)s. Did you mean %(guess)s?"),
    ),
    (
        re.compile(r"No such option: (?P<name>\S+) \(Possible options: (?P<options>.*)\)"),
        N_("No such option: %(name)s (Possible options: %(options)s)"),
    ),
    (re.compile(r"No such option: (?P<name>\S+)"), N_("No such option: %(name)s")),
    (re.compile(r"Missing argument (?P<name>'.*')\."), N_("Missing argument %(name)s.")),
    (re.compile(r"Missing option (?P<name>'.*')\."), N_("Missing option %(name)s.")),
    (re.compile(r"Missing command\."), N_("Missing command.")),
    (
        re.compile(r"Got unexpected extra arguments? \((?P<args>.*)\)"),
        N_("Got unexpected extra argument(s) (%(args)s)"),
    ),
    (
        re.compile(r"Invalid value for (?P<name>'[^']*'): (?P<detail>.*)"),
        N_("Invalid value for %(name)s: %(detail)s"),
    ),
)


def click_message(message: str) -> str:
    """One of click's usage errors in the reader's language (as it is when not one of them)."""
    for pattern, text in _CLICK_MESSAGES:
        found = pattern.fullmatch(message)
        if found is not None:
            return tr(text, **found.groupdict())
    return message


def usage_line(error: UsageError) -> str:
    """A usage error as one line: the message, and where the help is unless a guess is given."""
    said = " ".join(error.format_message().split())
    message = click_message(said)
    if getattr(error, "guessed", False) or "Did you mean" in said or error.ctx is None:
        return tr("error: %(message)s", message=message)
    return tr(
        "error: %(message)s (see '%(command)s --help')",
        message=message,
        command=error.ctx.command_path,
    )


def epilog() -> str:
    """The top level's epilog in the reader's language: three examples and the exit statuses
    (:mod:`shared.exit_codes`)."""
    return (
        examples(
            ("fieldlink login --server https://center.example -u olga", tr("log in once")),
            ('fieldlink devices "+44 20 7946"', tr("who is calling?")),
            ('fieldlink ssh mfp-0042 -r "paper jam, call 1234"', tr("a shell on it")),
            heading=tr("Examples:"),
        )
        + "\n\n\b\n"
        + tr("Exit status (the same in every command; docs/operations.md):")
        + "\n"
        + "\n".join(f"  {code:>3}  {tr(meaning)}" for code, meaning in exit_codes.MEANINGS.items())
    )


#: The top level's epilog in English (``--help`` shows :func:`epilog` in the reader's language).
EPILOG: Final = epilog()


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
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Resolve the command; a mistyped one is answered with the nearest (entry points too)."""
        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            if args and "Did you mean" not in exc.message:
                matches = get_close_matches(args[0], self.list_commands(ctx), n=1)
                if matches:
                    exc.message = tr(
                        "%(message)s Did you mean %(command)r?",
                        message=click_message(exc.message),
                        command=matches[0],
                    )
                    exc.guessed = True  # type: ignore[attr-defined]
            raise

    @override
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:
            raise  # ``fieldlink`` alone: the help
        except UsageError as exc:  # ``fieldlink --bogus``: one line too
            typer.echo(usage_line(exc), err=True)
            raise typer.Exit(exit_codes.USAGE) from None

    @override
    def format_commands(self, ctx: Any, formatter: HelpFormatter) -> None:
        """Every command with its whole one-line purpose (click would cut it at ~45 characters)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                with reader_language(command):
                    rows.append((name, purpose(command)))
        if rows:
            with formatter.section(tr("Commands")):
                formatter.write_dl(rows)

    @override
    def format_help(self, ctx: Any, formatter: HelpFormatter) -> None:
        """The help in the reader's language (:func:`reader_language`)."""
        with reader_language(self):
            super().format_help(ctx, formatter)

    @override
    def format_epilog(self, ctx: Any, formatter: HelpFormatter) -> None:
        """The epilog in the reader's language (click's would be the one made at import)."""
        if self.epilog:
            self.epilog = epilog()
        super().format_epilog(ctx, formatter)

    @override
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FieldlinkError as exc:
            typer.echo(tr("error: %(message)s", message=exc), err=True)
            raise typer.Exit(exc.exit_code) from None
        except NoArgsIsHelpError:
            raise  # ``fieldlink session`` alone: that group's help
        except UsageError as exc:
            # One line at every level (click would print the usage and a hint first).
            typer.echo(usage_line(exc), err=True)
            raise typer.Exit(exit_codes.USAGE) from None
        except KeyboardInterrupt:
            raise typer.Exit(exit_codes.INTERRUPTED) from None


app = typer.Typer(
    cls=FieldlinkCLI,
    name="fieldlink",
    help=N_("fieldlink: remote maintenance for installed equipment."),
    epilog=EPILOG,
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
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help=N_("print the version")
        ),
    ] = False,
) -> None:
    """fieldlink: remote maintenance for installed equipment."""


def main() -> None:
    """Console-script entry point."""
    quiet_library_warnings()
    app(prog_name="fieldlink")


if __name__ == "__main__":
    main()
