"""``fieldlink audit``: check the audit log's hash chain and read it, on the server's database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlmodel import Session

from server.cli.common import ConfigOption, open_database
from shared.cli_help import examples
from shared.cli_language import N_, tr

audit_app = typer.Typer(
    help=N_("Check and read the tamper-evident audit log."),
    epilog=examples(
        ("fieldlink audit verify", "is the chain intact?"),
        ("fieldlink audit list --actor olga", "what olga did, newest first"),
        ("fieldlink audit head", "the newest entry's hash, to keep"),
    ),
    no_args_is_help=True,
)


@audit_app.command("verify")
def verify(config: ConfigOption = None) -> None:
    """Walk the hash chain: exit 0 when intact, 1 naming the first broken entry."""
    from server import audit

    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            result = audit.verify(session)
    finally:
        engine.dispose()
    typer.echo(result.describe())
    if not result.intact:
        raise typer.Exit(1)


@audit_app.command("head")
def show_head(config: ConfigOption = None) -> None:
    """Print the newest entry's id and hash: record it outside the database to anchor the chain."""
    from server import audit

    _, engine = open_database(config)
    with Session(engine) as session:
        current = audit.head(session)
    if current is None or current[0] == 0:
        typer.echo(tr("audit log empty"))
    else:
        typer.echo(f"#{current[0]} {current[1]}")


@audit_app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option(min=1, max=10000, help="how many, newest first")] = 50,
    action: Annotated[
        str | None, typer.Option(help="only this action (a prefix when it ends in '*')")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="only this actor")] = None,
    target: Annotated[str | None, typer.Option(help="only this target")] = None,
    config: ConfigOption = None,
) -> None:
    """Print entries, newest first: id, time, actor, action, target, source, details."""
    from server import audit

    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            rows, total = audit.list_entries(
                session, actor=actor, action=action, target=target, limit=limit
            )
    finally:
        engine.dispose()
    for row in rows:
        typer.echo(
            f"#{row.id}  {_when(row.ts)}  {row.actor}  {row.action}  {row.target or '-'}  "
            f"{row.source_ip or '-'}  {row.details}"
        )
    typer.echo(tr("(%(shown)s of %(total)s entries)", shown=len(rows), total=total))


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") + "Z"
