"""How the operator's commands print a page of a list: the API's JSON, or a plain table."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import typer


def echo_page(
    page: dict[str, Any],
    *,
    as_json: bool,
    header: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[str]],
    noun: str,
) -> None:
    """Print ``page`` (``items`` and ``count``): as JSON, or one aligned row per item.

    The table ends with ``N of M <noun>``.
    """
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [tuple(header), *(tuple(row(item)) for item in page["items"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    typer.echo(f"{len(page['items'])} of {page['count']} {noun}")
