"""``fieldlink kpi``: the manager's figures, on the server's database or over the API.

It acts on the server's database directly (``--config FILE`` or
``FIELDLINK_CONFIG``), like the other administrative commands. A manager away
from the server runs ``fieldlink kpi`` (and ``fieldlink incident export``) over
the API instead: with no configuration given or found and a ``fieldlink login``
saved, through :class:`server.client.api.ApiClient`. Over the API it needs only
``fieldlink[client]``: the server's modules are imported where the database is
opened, never at import (``tests/unit/server/test_cli_imports.py`` checks it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import ConfigOption, config_found
from server.client.api import ApiClient, credentials_path
from server.kpi.report import GROUP_BYS, KPI_DEFINITIONS, KpiReport, default_window
from shared.cli_help import help_text
from shared.cli_language import N_, tr
from shared.errors import InvalidInput
from shared.ids import isoformat_z, utcnow

FromOption = Annotated[
    str | None, typer.Option("--from", help="start, inclusive: YYYY-MM-DD or ISO 8601 (UTC)")
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="end, exclusive: YYYY-MM-DD or ISO 8601 (UTC)")
]

#: The recorded calls' ASA column (``KpiGroup.calls``, ``KpiReport.calls``).
CALLS_ASA_DEFINITION = (
    "mean time from ring to answer over the recorded calls that started then, seconds"
)
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
    ("calls_asa_seconds", "asa-c s", "{:.0f}"),
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
        msg = tr(
            "%(option)s %(value)r is not a date (YYYY-MM-DD) or an ISO 8601 time",
            option=option,
            value=value,
        )
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
        data = {**group.model_dump(), "calls_asa_seconds": group.calls.asa_seconds}
        key = "(none)" if group.key is None else str(group.key)
        rows.append([key, *(_cell(data[name], style) for name, _, style in _COLUMNS)])
    total = {**report.total.model_dump(), "calls_asa_seconds": report.calls.asa_seconds}
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
    meaning = {**KPI_DEFINITIONS, "calls_asa_seconds": CALLS_ASA_DEFINITION}
    lines.extend(f"  {heading:>10}: {meaning[name]}" for name, heading, _ in _COLUMNS)
    return "\n".join(lines)


def api_client(config: Path | None) -> ApiClient | None:
    """A client of the logged-in server, when no configuration names a database."""
    if config_found(config):
        return None
    if not credentials_path().exists():
        return None
    return ApiClient.from_credentials()


@help_text(
    N_("Show the KPIs of the incidents closed in [--from, --to) (default: the last 12 months).")
)
def kpi_command(
    start: FromOption = None,
    end: ToOption = None,
    by: Annotated[
        str, typer.Option("--by", help="group by: none, month, device_type or region")
    ] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer")] = False,
    config: ConfigOption = None,
    voice: Annotated[
        bool,
        typer.Option(
            "--voice", help="the customer's voice: NPS, CSAT, follow-ups (--by resolution too)"
        ),
    ] = False,
) -> None:
    if voice:
        _voice(start, end, by, as_json, config)
        return
    if by not in GROUP_BYS:
        msg = tr("--by must be one of %(choices)s", choices=", ".join(GROUP_BYS))
        raise InvalidInput(msg)
    default_start, default_end = default_window(utcnow())
    window_start = parse_when(start, "--from") if start else default_start
    window_end = parse_when(end, "--to") if end else default_end
    client = api_client(config)
    if client is not None:
        try:
            answer = client.kpis(
                start=isoformat_z(window_start), end=isoformat_z(window_end), group_by=by
            )
        finally:
            client.close()
        report = KpiReport.model_validate(answer)
        if as_json:
            typer.echo(report.model_dump_json(by_alias=True, indent=2))
        else:
            typer.echo(format_report(report))
        return
    from server.cli.common import open_database
    from server.kpi.compute import compute_kpis
    from server.kpi.config import kpi_settings_of

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
        typer.echo(report.model_dump_json(by_alias=True, indent=2))
    else:
        typer.echo(format_report(report))


def _voice(start: str | None, end: str | None, by: str, as_json: bool, config: Path | None) -> None:
    """``--voice``: the customer's voice instead of the KPIs."""
    import json

    from server.cli.voice import format_voice, voice_report

    if by not in (*GROUP_BYS, "resolution"):
        msg = tr("--by must be one of %(choices)s", choices=", ".join((*GROUP_BYS, "resolution")))
        raise InvalidInput(msg)
    default_start, default_end = default_window(utcnow())
    window_start = parse_when(start, "--from") if start else default_start
    window_end = parse_when(end, "--to") if end else default_end
    report = voice_report(api_client(config), config, window_start, window_end, by)
    typer.echo(json.dumps(report, indent=2) if as_json else format_voice(report))
