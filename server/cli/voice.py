"""``fieldlink kpi --voice``: NPS, CSAT, response rate and follow-ups (docs/kpis.md).

Reads ``GET /api/v1/kpis/voice``'s answer as plain JSON, so that it needs only
``fieldlink[client]`` over the API; on the server's database it computes the same
report with :mod:`server.kpi.voice`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from server.client.api import ApiClient
from shared.ids import isoformat_z

_COLUMNS: list[tuple[str, str, str]] = [
    ("surveys", "surveys", "int"),
    ("answers", "answers", "int"),
    ("response_rate", "resp%", "pct"),
    ("nps", "nps", "{:+.0f}"),
    ("csat_call_center", "csat-cc", "{:.2f}"),
    ("csat_remote_fix", "csat-rf", "{:.2f}"),
    ("csat_on_site", "csat-os", "{:.2f}"),
    ("followups", "followups", "int"),
    ("followups_on_time_rate", "ontime%", "pct"),
    ("followups_overdue", "overdue", "int"),
]


def _cell(value: Any, style: str) -> str:
    if value is None:
        return "-"
    if style == "pct":
        return f"{100 * value:.1f}"
    if style == "int":
        return str(int(value))
    return style.format(value)


def format_voice(report: dict[str, Any]) -> str:
    """The voice report (the API's JSON) as a plain text table."""
    lines = [
        f"The customer's voice, incidents closed from {report['from'][:10]} to "
        f"{report['to'][:10]} (to excluded)"
        + ("  [includes demo data]" if report.get("demo_data") else ""),
        "",
    ]
    by = report.get("group_by", "none")
    rows = [
        ["(none)" if g["key"] is None else str(g["key"]), *(_cell(g[n], s) for n, _, s in _COLUMNS)]
        for g in report["groups"]
    ]
    rows.append(["total", *(_cell(report["total"][n], s) for n, _, s in _COLUMNS)])
    header = [by if by != "none" else "", *(h for _, h, _ in _COLUMNS)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def voice_report(
    client: ApiClient | None, config: Path | None, start: datetime, end: datetime, by: str
) -> dict[str, Any]:
    """The voice report, over the API when ``client`` is given, else from the database."""
    if client is not None:
        try:
            answer: dict[str, Any] = client.request(
                "GET",
                "/kpis/voice",
                params={"from": isoformat_z(start), "to": isoformat_z(end), "group_by": by},
            )
        finally:
            client.close()
        return answer
    from server.cli.common import open_database
    from server.kpi.voice import compute_voice

    _, engine = open_database(config)
    try:
        with engine.connect() as connection:
            report = compute_voice(connection, start=start, end=end, group_by=by)
    finally:
        engine.dispose()
    result: dict[str, Any] = report.model_dump(mode="json", by_alias=True)
    return result
