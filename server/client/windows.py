"""``fieldlink window list|add|delete``: maintenance windows over the API.

Runs against the server saved by ``fieldlink login`` (``fieldlink[client]`` is
enough). A window covers one device (``--device``), a customer's devices
(``--customer``) or one of its sites (``--customer C --site NAME``); a recurring
one takes an RFC 5545 rule read in ``--tz`` (``--rrule "FREQ=WEEKLY;BYDAY=SU"``).
During a window, faults and offline states open no incident and send no
notification. Bad input is one ``error:`` line, the API's refusal too.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from server.client.api import ApiClient, part
from server.client.tables import echo_page
from shared.cli_help import examples, help_text
from shared.cli_language import N_, tr
from shared.errors import InvalidInput

JsonOption = Annotated[bool, typer.Option("--json", help=N_("print the API's JSON answer"))]

window_app = typer.Typer(
    help=N_("Maintenance windows: faults in one open no incident and notify nobody."),
    epilog=examples(
        ("fieldlink window list --device d1", "its own"),
        ("fieldlink window add --device d1 --start 2026-12-13 --minutes 90", "once"),
        ("fieldlink window delete 7", "gone"),
    ),
    no_args_is_help=True,
)


def _when(value: Any) -> str:
    return str(value or "-")[:16].replace("T", " ")


def _covers(window: dict[str, Any]) -> str:
    if window.get("device_id"):
        return str(window["device_id"])
    site = f"/{window['site']}" if window.get("site") else ""
    return f"{window['customer_number']}{site}"


@window_app.command("list")
@help_text(N_("List windows with the one in progress and the next start."))
def list_command(
    device: Annotated[
        str | None, typer.Option("--device", help=N_("the windows covering this device"))
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help=N_("this customer's windows and its devices'"))
    ] = None,
    as_json: JsonOption = False,
) -> None:
    params = {k: v for k, v in (("device_id", device), ("customer", customer)) if v is not None}
    with ApiClient.from_credentials() as api:
        page: dict[str, Any] = api.request("GET", "/maintenance-windows", params=params)
    echo_page(
        page,
        as_json=as_json,
        header=(
            tr("ID"),
            tr("COVERS"),
            tr("MINUTES"),
            tr("RULE"),
            tr("ZONE"),
            tr("NOW"),
            tr("NEXT"),
            tr("REASON"),
        ),
        row=lambda w: (
            str(w["id"]),
            _covers(w),
            str(w["duration_minutes"]),
            w.get("rrule") or tr("once"),
            w["timezone"],
            tr("yes") if w.get("active") else "-",
            _when((w.get("next_starts") or [None])[0]),
            (w.get("reason") or "-")[:40],
        ),
        noun=tr("maintenance windows"),
    )


@window_app.command("add")
@help_text(N_("Plan a window for a device, a customer or a site."))
def add_command(
    start: Annotated[
        datetime,
        typer.Option(
            "--start",
            help=N_("the first start, e.g. 2026-12-13T02:00 (in --tz unless it has an offset)"),
        ),
    ],
    minutes: Annotated[
        int, typer.Option("--minutes", help=N_("how long each occurrence lasts"), min=1, max=44640)
    ],
    device: Annotated[str | None, typer.Option("--device", help=N_("one device"))] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help=N_("a customer's devices (its number)"))
    ] = None,
    site: Annotated[
        str | None, typer.Option("--site", help=N_("with --customer: only this site's devices"))
    ] = None,
    rrule: Annotated[
        str | None,
        typer.Option("--rrule", help=N_('repeat by an RFC 5545 rule, e.g. "FREQ=WEEKLY;BYDAY=SU"')),
    ] = None,
    tz: Annotated[
        str, typer.Option("--tz", help=N_("the IANA time zone of --start and --rrule"))
    ] = "UTC",
    reason: Annotated[
        str, typer.Option("--reason", help=N_("why (shown on the device page)"))
    ] = "",
    preapprove: Annotated[
        bool,
        typer.Option(
            "--preapprove-sessions", help=N_("sessions in the window need no consent (admin)")
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    if (device is None) == (customer is None):
        msg = tr("give either --device or --customer")
        raise InvalidInput(msg)
    body: dict[str, Any] = {
        "device_id": device,
        "customer_number": customer,
        "site": site,
        "start": start.isoformat(),
        "duration_minutes": minutes,
        "rrule": rrule,
        "timezone": tz,
        "reason": reason,
        "preapprove_sessions": preapprove,
    }
    with ApiClient.from_credentials() as api:
        window: dict[str, Any] = api.request("POST", "/maintenance-windows", json=body)
    if as_json:
        typer.echo(json.dumps(window, indent=2))
        return
    upcoming = ", ".join(_when(s) for s in window.get("next_starts", [])[:3]) or tr("none")
    typer.echo(
        tr(
            "window %(id)s for %(covers)s; next (UTC): %(next)s",
            id=window["id"],
            covers=_covers(window),
            next=upcoming,
        )
    )


@window_app.command("delete")
@help_text(N_("Remove a window."))
def delete_command(
    window_id: Annotated[int, typer.Argument(help=N_("the window's id"), min=1)],
) -> None:
    with ApiClient.from_credentials() as api:
        api.request("DELETE", f"/maintenance-windows/{part(str(window_id))}")
    typer.echo(tr("window %(id)s removed", id=window_id))
