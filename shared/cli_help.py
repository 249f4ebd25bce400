"""Help texts the command groups share: the examples epilog of ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def examples(*lines: tuple[str, str], heading: str = "Examples:") -> str:
    """An epilog of examples, ``(command, what it does)`` a line, kept as written.

    ``\\b`` keeps click from re-wrapping the lines; typer's rich help shows the
    text as it is. A group's epilog is made at import, in English; the top level's
    (:func:`shared.cli.epilog`) is made as the help is shown, its ``heading`` translated.
    """
    width = max(len(command) for command, _ in lines)
    body = "\n".join(f"  {command:<{width}}  # {what}" for command, what in lines)
    return f"\b\n{heading}\n{body}"


def help_text(text: str) -> Callable[[F], F]:
    """A command's ``--help``, written ``@help_text(N_("..."))`` where a docstring would be.

    Typer takes a command's help from its docstring; a docstring cannot be marked for the
    ``cli`` catalog, a text given here can (``N_``), and ``--help`` shows it in the reader's
    language (:func:`shared.cli.reader_language`). It is the function's ``__doc__``.
    """

    def described(function: F) -> F:
        function.__doc__ = text
        return function

    return described
