"""Help texts the command groups share: the examples epilog of ``--help``."""

from __future__ import annotations


def examples(*lines: tuple[str, str], heading: str = "Examples:") -> str:
    """An epilog of examples, ``(command, what it does)`` a line, kept as written.

    ``\\b`` keeps click from re-wrapping the lines; typer's rich help shows the
    text as it is. A group's epilog is made at import, in English; the top level's
    (:func:`shared.cli.epilog`) is made as the help is shown, its ``heading`` translated.
    """
    width = max(len(command) for command, _ in lines)
    body = "\n".join(f"  {command:<{width}}  # {what}" for command, what in lines)
    return f"\b\n{heading}\n{body}"
