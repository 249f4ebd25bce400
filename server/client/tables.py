"""How the operator's commands print a page of a list: the API's JSON, or a plain table."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import typer

from shared.cli_language import tr


def echo_page(
    page: dict[str, Any],
    *,
    as_json: bool,
    header: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[str]],
    noun: str,
) -> None:
    """Print ``page`` (``items`` and ``count``): as JSON, or one aligned row per item.

    The table ends with ``N of M <noun>`` (``noun`` in the reader's language).
    """
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [tuple(header), *(tuple(row(item)) for item in page["items"])]
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = (cell + " " * (w - _width(cell)) for cell, w in zip(r, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())
    typer.echo(
        tr(
            "%(shown)s of %(count)s %(noun)s",
            shown=len(page["items"]),
            count=page["count"],
            noun=noun,
        )
    )


def _width(text: str) -> int:
    """Columns a text takes on a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
