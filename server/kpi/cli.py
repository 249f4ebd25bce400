"""``fieldlink kpi`` (the manager's figures) and ``fieldlink incident import|export``.

Both act on the server's database directly (``--config FILE`` or
``FIELDLINK_CONFIG``), like the other administrative commands. A manager away
from the server runs ``fieldlink kpi`` and ``fieldlink incident export`` over the
API instead: with no configuration given or found and a ``fieldlink login`` saved.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from server.cli import ConfigOption, open_database
from server.client import ApiClient, credentials_path
from server.config import DEFAULT_CONFIG
from server.crud import InvalidInput
from server.kpi.compute import GROUP_BYS, KPI_DEFINITIONS, KpiReport, compute_kpis, default_window
from server.kpi.config import kpi_settings_of
from shared.ids import isoformat_z, utcnow
from shared.tomlfile import resolve_config_path

incident_app = typer.Typer(
    help="Import and export call-center incidents (CSV, the columns of docs/kpis.md).",
    no_args_is_help=True,
)

FromOption = Annotated[
    str | None, typer.Option("--from", help="start, inclusive: YYYY-MM-DD or ISO 8601 (UTC)")
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="end, exclusive: YYYY-MM-DD or ISO 8601 (UTC)")
]

# Column headings of the table and how each figure is shown.
_COLUMNS: list[tuple[str, str, str]] = [
    ("incidents_closed", "closed", "{:d}"),
    ("remote_usage_rate", "remote%", "pct"),
    ("self_resolution_rate", "self%", "pct"),
    ("remote_resolution_rate", "rres%", "pct"),
    ("dispatches", "disp", "{:d}"),
    ("dispatches_avoided", "avoided", "{:d}"),
    ("mttr_hours", "mttr h", "{:.1f}"),
    ("mttr_remote_hours", "mttr-r h", "{:.1f}"),
    ("mttr_dispatch_hours", "mttr-d h", "{:.1f}"),
    ("asa_seconds", "asa s", "{:.0f}"),
    ("downtime_saved_hours", "saved h", "{:,.0f}"),
    ("cost_saved", "cost saved", "{:,.0f}"),
]


def parse_when(value: str, option: str) -> datetime:
    """A date (midnight UTC) or an ISO 8601 time (UTC when it has no offset).

    Raises:
        InvalidInput: naming the option.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{option} {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        raise InvalidInput(msg) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _cell(value: float | int | None, style: str) -> str:
    if value is None:
        return "-"
    if style == "pct":
        return f"{100 * value:.1f}"
    if style == "{:d}":
        return str(int(value))
    return style.format(value)


def format_report(report: KpiReport) -> str:
    """The report as a plain text table, with the baseline and what each column means."""
    lines = [
        f"KPIs of incidents closed from {report.from_:%Y-%m-%d %H:%M} to "
        f"{report.to:%Y-%m-%d %H:%M} UTC (to excluded)",
        "baseline ttr (h): "
        + ", ".join(
            f"{t} {h:.1f} ({report.baseline_source[t]})"
            for t, h in report.baseline_ttr_hours.items()
        ),
        "",
    ]
    rows: list[list[str]] = []
    for group in report.groups:
        data = group.model_dump()
        key = "(none)" if group.key is None else str(group.key)
        rows.append([key, *(_cell(data[name], style) for name, _, style in _COLUMNS)])
    total = report.total.model_dump()
    rows.append(["total", *(_cell(total[name], style) for name, _, style in _COLUMNS)])
    header = [report.group_by if report.group_by != "none" else "", *(h for _, h, _ in _COLUMNS)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    lines.append(line(header))
    lines.append(line(["-" * w for w in widths]))
    if len(rows) > 1:
        lines.extend(line(row) for row in rows[:-1])
        lines.append(line(["-" * w for w in widths]))
    lines.append(line(rows[-1]))
    lines.append("")
    lines.extend(f"  {heading:>10}: {KPI_DEFINITIONS[name]}" for name, heading, _ in _COLUMNS)
    return "\n".join(lines)


def api_client(config: Path | None) -> ApiClient | None:
    """A client of the logged-in server, when no configuration names a database."""
    if resolve_config_path(config, DEFAULT_CONFIG) is not None:
        return None
    if not credentials_path().exists():
        return None
    return ApiClient.from_credentials()


def kpi_command(
    start: FromOption = None,
    end: ToOption = None,
    by: Annotated[
        str, typer.Option("--by", help="group by: none, month, device_type or region")
    ] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer")] = False,
    config: ConfigOption = None,
) -> None:
    """Show the KPIs of the incidents closed in [--from, --to) (default: the last 12 months)."""
    if by not in GROUP_BYS:
        msg = f"--by must be one of {', '.join(GROUP_BYS)}"
        raise InvalidInput(msg)
    default_start, default_end = default_window(utcnow())
    window_start = parse_when(start, "--from") if start else default_start
    window_end = parse_when(end, "--to") if end else default_end
    client = api_client(config)
    if client is not None:
        try:
            answer = client.request(
                "GET",
                "/kpis",
                params={
                    "from": isoformat_z(window_start),
                    "to": isoformat_z(window_end),
                    "group_by": by,
                },
            )
        finally:
            client.close()
        report = KpiReport.model_validate(answer)
        if as_json:
            print(report.model_dump_json(by_alias=True, indent=2))
        else:
            print(format_report(report))
        return
    settings, engine = open_database(config)
    try:
        with engine.connect() as connection:
            report = compute_kpis(
                connection,
                start=window_start,
                end=window_end,
                group_by=by,
                settings=kpi_settings_of(settings),
            )
    finally:
        engine.dispose()
    if as_json:
        print(report.model_dump_json(by_alias=True, indent=2))
    else:
        print(format_report(report))


@incident_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV file (docs/kpis.md's columns); - for stdin")],
    config: ConfigOption = None,
) -> None:
    """Import incidents from CSV: all rows, or none if one is bad (each bad line is listed)."""
    from server.kpi.csv_io import CsvImportInvalid, import_incidents_csv

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
            print(f"{file}:{problem}", file=sys.stderr)
        lines = len({p.line for p in exc.problems})
        msg = f"{lines} bad row(s) in {file}: nothing imported"
        raise InvalidInput(msg) from None
    finally:
        engine.dispose()
    print(
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
    from server.kpi.csv_io import export_incidents_csv
    from server.kpi.incidents import incident_filters

    if on not in ("closed_at", "opened_at"):
        msg = "--on must be closed_at or opened_at"
        raise InvalidInput(msg)
    window_start = parse_when(start, "--from") if start else None
    window_end = parse_when(end, "--to") if end else None
    client = api_client(config)
    if client is not None:
        params = {"on": on}
        if window_start is not None:
            params["from"] = isoformat_z(window_start)
        if window_end is not None:
            params["to"] = isoformat_z(window_end)
        try:
            text = client.request("GET", "/incidents/export", params=params)
        finally:
            client.close()
        _write(out, str(text or ""))
        return
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
