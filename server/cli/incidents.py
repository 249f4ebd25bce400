"""``fieldlink incident import|export``: call-center incidents as CSV (docs/kpis.md's columns).

Both act on the server's database directly (``--config FILE`` or
``FIELDLINK_CONFIG``); ``export`` runs over the API instead when no
configuration is given or found and a ``fieldlink login`` is saved, where
``fieldlink[client]`` alone is enough (the server's modules are imported only
where the database is opened).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import ConfigOption, open_database
from server.cli.kpi import FromOption, ToOption, api_client, parse_when
from shared.errors import InvalidInput
from shared.ids import isoformat_z

incident_app = typer.Typer(
    help="Import and export call-center incidents (CSV, the columns of docs/kpis.md).",
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
        msg = f"cannot read {file}: {exc.strerror}"
        raise InvalidInput(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{file} is not UTF-8 text"
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
        msg = f"{lines} bad row(s) in {file}: nothing imported"
        raise InvalidInput(msg) from None
    finally:
        engine.dispose()
    typer.echo(
        f"{report.rows} rows: {report.inserted} inserted, {report.updated} updated, "
        f"{report.skipped} unchanged"
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
        msg = "--on must be closed_at or opened_at"
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
        _write(out, text)
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
                msg = f"cannot write {out}: {exc.strerror}"
                raise InvalidInput(msg) from exc
    finally:
        engine.dispose()


def _write(out: Path | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        msg = f"cannot write {out}: {exc.strerror}"
        raise InvalidInput(msg) from exc
