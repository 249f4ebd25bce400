"""``fieldlink incident import|export|escalate``: call-center incidents.

``import``/``export`` move CSV (docs/kpis.md's columns); ``escalate`` hands an
open incident to another tier and/or user with a handover note (audited).
All act on the server's database directly (``--config FILE`` or
``FIELDLINK_CONFIG``); ``export`` and ``escalate`` run over the API instead when no
configuration is given or found and a ``fieldlink login`` is saved, where
``fieldlink[client]`` alone is enough (the server's modules are imported only
where the database is opened).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import ConfigOption, open_database, write_out
from server.cli.kpi import FromOption, ToOption, api_client, parse_when
from shared.cli_help import examples
from shared.cli_language import N_, tr
from shared.errors import InvalidInput
from shared.ids import isoformat_z

incident_app = typer.Typer(
    help=N_("Import and export call-center incidents (CSV, the columns of docs/kpis.md)."),
    epilog=examples(
        ("fieldlink incident import incidents.csv", "history"),
        ("fieldlink incident export > incidents.csv", "as CSV"),
        ('fieldlink incident escalate 17 --tier 2 --note "…"', "to tier 2"),
    ),
    no_args_is_help=True,
)


@incident_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV file (docs/kpis.md's columns); - for stdin")],
    config: ConfigOption = None,
) -> None:
    """Import incidents from CSV: all rows, or none if one is bad (each bad line is listed)."""
    from sqlmodel import Session

    from server.incidents.csv_io import CsvImportInvalid, import_incidents_csv

    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        msg = tr("cannot read %(path)s: %(error)s", path=file, error=exc.strerror)
        raise InvalidInput(msg) from exc
    except UnicodeDecodeError as exc:
        msg = tr("%(path)s is not UTF-8 text", path=file)
        raise InvalidInput(msg) from exc
    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            report = import_incidents_csv(session, text)
    except CsvImportInvalid as exc:
        # Every bad row on its own line, then the one-line error.
        for problem in exc.problems:
            typer.echo(f"{file}:{problem}", err=True)
        lines = len({p.line for p in exc.problems})
        msg = tr("%(count)s bad row(s) in %(path)s: nothing imported", count=lines, path=file)
        raise InvalidInput(msg) from None
    finally:
        engine.dispose()
    typer.echo(
        tr(
            "%(rows)s rows: %(inserted)s inserted, %(updated)s updated, %(skipped)s unchanged",
            rows=report.rows,
            inserted=report.inserted,
            updated=report.updated,
            skipped=report.skipped,
        )
    )


@incident_app.command("export")
def export_command(
    start: FromOption = None,
    end: ToOption = None,
    on: Annotated[
        str, typer.Option("--on", help="the time --from/--to bound: opened_at or closed_at")
    ] = "opened_at",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write here instead of stdout")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Export incidents as CSV (docs/kpis.md's columns)."""
    if on not in ("closed_at", "opened_at"):
        msg = tr("--on must be closed_at or opened_at")
        raise InvalidInput(msg)
    window_start = parse_when(start, "--from") if start else None
    window_end = parse_when(end, "--to") if end else None
    client = api_client(config)
    if client is not None:
        try:
            text = client.export_incidents(
                on=on,
                start=isoformat_z(window_start) if window_start is not None else None,
                end=isoformat_z(window_end) if window_end is not None else None,
            )
        finally:
            client.close()
        write_out(out, text)
        return
    from server.incidents.csv_io import export_incidents_csv
    from server.incidents.records import incident_filters

    where = incident_filters(
        start=window_start,
        end=window_end,
        time_field="closed_at" if on == "closed_at" else "opened_at",
    )
    _, engine = open_database(config)
    try:
        with engine.connect() as connection:
            if out is None:
                for chunk in export_incidents_csv(connection, where):
                    sys.stdout.write(chunk)
                sys.stdout.flush()
                return
            try:
                with out.open("w", encoding="utf-8", newline="") as handle:
                    for chunk in export_incidents_csv(connection, where):
                        handle.write(chunk)
            except OSError as exc:
                msg = tr("cannot write %(path)s: %(error)s", path=out, error=exc.strerror)
                raise InvalidInput(msg) from exc
    finally:
        engine.dispose()


@incident_app.command("escalate")
def escalate_command(
    incident_id: Annotated[int, typer.Argument(help="the incident's id", min=1)],
    note: Annotated[
        str, typer.Option("--note", help="the handover note: what was tried, what is needed")
    ],
    tier: Annotated[
        int | None,
        typer.Option("--tier", help="1 call center, 2 remote specialist, 3 field"),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="the user name to assign the incident to")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Escalate an open incident to a tier and/or a user, with a handover note (audited)."""
    if tier is None and to is None:
        msg = tr("give --tier, --to or both")
        raise InvalidInput(msg)
    if tier is not None and tier not in (1, 2, 3):
        msg = tr("--tier must be 1 (call center), 2 (remote specialist) or 3 (field)")
        raise InvalidInput(msg)
    if not note.strip() or len(note) > HANDOVER_NOTE_MAX:
        msg = tr("--note must be 1 to %(most)s characters", most=HANDOVER_NOTE_MAX)
        raise InvalidInput(msg)
    client = api_client(config)
    if client is not None:
        try:
            answer = client.escalate_incident(incident_id, tier=tier, assignee=to, note=note)
        finally:
            client.close()
        typer.echo(_escalated(answer["id"], answer["tier"], answer["assignee"]))
        return
    from pydantic import ValidationError
    from sqlmodel import Session

    from server.audit import cli_actor
    from server.incidents.records import escalate_incident
    from server.models import IncidentEscalate

    try:
        data = IncidentEscalate.model_validate({"tier": tier, "assignee": to, "note": note})
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        raise InvalidInput(msg) from None
    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            incident = escalate_incident(
                session, incident_id=incident_id, data=data, actor=cli_actor()
            )
            typer.echo(_escalated(incident.id, incident.tier, incident.assignee))
    finally:
        engine.dispose()


#: The longest handover note: ``server.models.incident.HANDOVER_NOTE_MAX``, repeated here
#: so that a client-only install checks it without the server's models.
HANDOVER_NOTE_MAX = 2000


def _escalated(incident_id: object, tier: object, assignee: object) -> str:
    return tr(
        "incident %(id)s: tier %(tier)s, assignee %(assignee)s",
        id=incident_id,
        tier=tier,
        assignee=assignee or "-",
    )
