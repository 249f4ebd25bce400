"""``fieldlink customer ...`` and ``fieldlink call ...``: customers, CSV imports, incoming calls.

They act on the server's database directly (``--config FILE`` or ``FIELDLINK_CONFIG``),
like ``fieldlink device`` and ``fieldlink incident``; each change is audited as ``cli:<user>``.
``customer list|show`` and ``call lookup|list`` run over the API instead when no
configuration is given or found and a ``fieldlink login`` is saved (an operator's laptop).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import Session

from server import audit
from server.cli.common import ConfigOption, open_database, write_out
from server.crud import InvalidInput
from shared.cli_help import examples
from shared.cli_language import N_, tr

customer_app = typer.Typer(
    help=N_("Customers: add, list, show; CSV import of customers and devices."),
    epilog=examples(
        ("fieldlink customer import customers.csv", "add or update customers"),
        ("fieldlink customer import-devices devices.csv", "register their devices"),
        ("fieldlink customer show 42", "contacts, sites, devices"),
    ),
    no_args_is_help=True,
)
call_app = typer.Typer(
    help=N_("Incoming calls: who is calling, the calls recorded."),
    epilog=examples(
        ('fieldlink call lookup "+44 20 7946 0000"', "who is calling?"),
        ("fieldlink call lookup 0301234 --customer-no 42", "a local number"),
        ("fieldlink call list", "recent calls"),
    ),
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def _contact(text: str) -> dict[str, Any]:
    name, phone, email, language = ([*text.split(","), "", "", ""])[:4]
    return {
        "name": name.strip(),
        "phone": phone.strip() or None,
        "email": email.strip() or None,
        "language": language.strip() or None,
    }


def _site(text: str) -> dict[str, Any]:
    name, _, country = text.rpartition(":") if ":" in text else (text, "", "")
    return {"name": name.strip(), "country": country.strip() or None}


@customer_app.command("add")
def customer_add(
    number: Annotated[str, typer.Argument(help="the customer number (what callers key in)")],
    name: Annotated[str, typer.Option(help="the customer's name")],
    country: Annotated[
        str | None, typer.Option(help="ISO country code: local phone numbers are read in it")
    ] = None,
    region: Annotated[str | None, typer.Option(help="region")] = None,
    contact: Annotated[
        list[str] | None,
        typer.Option(help='"NAME,PHONE,EMAIL,LANGUAGE" (repeat for more; trailing parts optional)'),
    ] = None,
    site: Annotated[list[str] | None, typer.Option(help='"NAME[:COUNTRY]" (repeat)')] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add a customer with its contacts (phones stored in E.164) and sites."""
    from pydantic import ValidationError

    from server.crud.customers import create_customer, customer_public
    from server.models import CustomerCreate

    try:
        data = CustomerCreate.model_validate(
            {
                "number": number,
                "name": name,
                "country": country,
                "region": region,
                "contacts": [_contact(c) for c in contact or []],
                "sites": [_site(s) for s in site or []],
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = f"{where}: {first['msg']}"
        raise InvalidInput(msg) from exc
    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            customer = create_customer(session, data=data, actor=audit.cli_actor())
            public = customer_public(session, customer)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(public.model_dump_json())
    else:
        typer.echo(
            tr("created customer %(number)s: %(name)s", number=public.number, name=public.name)
        )
        for c in public.contacts:
            typer.echo("  " + tr("contact %(name)s: %(phone)s", name=c.name, phone=c.phone or "-"))


@customer_app.command("list")
def customer_list(
    q: Annotated[str | None, typer.Option("--q", help="number or name contains")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List customers by number."""
    from server.cli.kpi import api_client
    from server.crud.customers import customer_public, list_customers
    from server.models import CustomerPublic

    client = api_client(config)
    if client is not None:
        try:
            page = client.customers(limit=limit, **({"q": q} if q else {}))
        finally:
            client.close()
        items = [CustomerPublic.model_validate(c) for c in page["items"]]
        total = int(page["count"])
    else:
        _, engine = open_database(config)
        try:
            with Session(engine) as session:
                rows, total = list_customers(session, q=q, limit=limit)
                items = [customer_public(session, c) for c in rows]
        finally:
            engine.dispose()
    if as_json:
        typer.echo(
            json.dumps({"items": [i.model_dump(mode="json") for i in items], "count": total})
        )
        return
    for item in items:
        typer.echo(
            f"{item.number:<12} {item.name:<40} {item.country or '-':<3} "
            + tr("%(count)s device(s)", count=item.device_count)
        )
    typer.echo(tr("%(count)s customer(s)", count=total))


@customer_app.command("show")
def customer_show(
    number: Annotated[str, typer.Argument(help="the customer number")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show a customer: contacts, sites, device count."""
    from server.cli.kpi import api_client
    from server.crud.customers import customer_public, get_customer
    from server.models import CustomerPublic

    client = api_client(config)
    if client is not None:
        try:
            public = CustomerPublic.model_validate(client.customer(number))
        finally:
            client.close()
    else:
        _, engine = open_database(config)
        try:
            with Session(engine) as session:
                public = customer_public(session, get_customer(session, number=number))
        finally:
            engine.dispose()
    if as_json:
        typer.echo(public.model_dump_json())
        return
    typer.echo(f"{public.number}: {public.name} ({public.country or '-'}, {public.region or '-'})")
    for c in public.contacts:
        said = tr("contact %(name)s: %(phone)s", name=c.name, phone=c.phone or "-")
        typer.echo(f"  {said} {c.email or ''} {c.language or ''}".rstrip())
    for s in public.sites:
        typer.echo("  " + tr("site %(name)s (%(country)s)", name=s.name, country=s.country or "-"))
    typer.echo("  " + tr("%(count)s device(s)", count=public.device_count))


def _read_csv(file: Path) -> str:
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        return data.decode("utf-8-sig")
    except OSError as exc:
        msg = tr("cannot read %(path)s: %(error)s", path=file, error=exc.strerror)
        raise InvalidInput(msg) from exc
    except UnicodeDecodeError as exc:
        msg = tr("%(path)s is not UTF-8 text", path=file)
        raise InvalidInput(msg) from exc


def _import(file: Path, config: Path | None, devices: bool) -> str:
    from server.customers.csv_io import import_customers_csv, import_devices_csv
    from server.incidents.csv_io import CsvImportInvalid

    text = _read_csv(file)
    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            if devices:
                report = import_devices_csv(session, text, actor=audit.cli_actor())
                return tr(
                    "%(rows)s rows: %(inserted)s devices registered",
                    rows=report.rows,
                    inserted=report.inserted,
                )
            customers = import_customers_csv(session, text, actor=audit.cli_actor())
            return tr(
                "%(rows)s rows: %(inserted)s customers created, %(skipped)s already on record",
                rows=customers.rows,
                inserted=customers.inserted,
                skipped=customers.skipped,
            )
    except CsvImportInvalid as exc:
        for problem in exc.problems:
            typer.echo(f"{file}:{problem}", err=True)
        lines = len({p.line for p in exc.problems})
        msg = tr("%(count)s bad row(s) in %(path)s: nothing imported", count=lines, path=file)
        raise InvalidInput(msg) from None
    finally:
        engine.dispose()


@customer_app.command("import")
def customer_import(
    file: Annotated[Path, typer.Argument(help="CSV file of customers; - for stdin")],
    config: ConfigOption = None,
) -> None:
    """Import customers (one row per contact or site): all rows, or none if one is bad."""
    typer.echo(_import(file, config, devices=False))


@customer_app.command("import-devices")
def customer_import_devices(
    file: Annotated[Path, typer.Argument(help="CSV file of devices; - for stdin")],
    config: ConfigOption = None,
) -> None:
    """Register devices of known customers from CSV: all rows, or none if one is bad."""
    typer.echo(_import(file, config, devices=True))


@customer_app.command("export")
def customer_export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write here, not stdout")] = None,
    config: ConfigOption = None,
) -> None:
    """Export every customer as CSV (formula starts marked as text)."""
    from server.customers.csv_io import export_customers_csv

    _, engine = open_database(config)
    try:
        with Session(engine) as session:
            text = "".join(export_customers_csv(session))
    finally:
        engine.dispose()
    write_out(out, text)


@call_app.command("lookup")
def call_lookup(
    ani: Annotated[str, typer.Argument(help="the caller's number, any notation")],
    customer_no: Annotated[
        str | None, typer.Option("--customer-no", help="the customer number keyed in")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Who is calling: the customer, devices and open incidents a number matches."""
    from server.cli.kpi import api_client
    from server.customers.calls import lookup

    client = api_client(config)
    if client is not None:
        try:
            found = client.lookup(ani, customer_no)
        finally:
            client.close()
        _print_lookup(
            as_json,
            ani_e164=found["ani_e164"],
            customer=found["customer"],
            devices=[d["id"] for d in found["devices"]],
            incidents=[i["id"] for i in found["open_incidents"]],
            numbers=found["customer_numbers"],
        )
        return
    settings, engine = open_database(config)
    try:
        with Session(engine) as session:
            match = lookup(
                session,
                ani=ani,
                customer_number=customer_no,
                default_region=settings.phone_default_region,
            )
    finally:
        engine.dispose()
    _print_lookup(
        as_json,
        ani_e164=match.ani_e164,
        customer=match.customer.model_dump(mode="json") if match.customer else None,
        devices=[d.id for d in match.devices],
        incidents=[i.id for i in match.open_incidents],
        numbers=match.customer_numbers,
    )


def _print_lookup(
    as_json: bool,
    *,
    ani_e164: str | None,
    customer: dict[str, Any] | None,
    devices: list[str],
    incidents: list[int],
    numbers: list[str],
) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ani_e164": ani_e164,
                    "customer": customer,
                    "devices": devices,
                    "open_incidents": incidents,
                    "customer_numbers": numbers,
                }
            )
        )
        return
    named = f"{customer['number']} {customer['name']}" if customer else "-"
    typer.echo(f"number:    {ani_e164}")
    typer.echo(f"customer:  {named}")
    typer.echo(f"devices:   {', '.join(devices) or '-'}")
    typer.echo(f"incidents: {', '.join(f'#{i}' for i in incidents) or '-'}")


@call_app.command("list")
def call_list(
    customer: Annotated[str | None, typer.Option(help="customer number")] = None,
    device: Annotated[str | None, typer.Option(help="device id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """The calls recorded, newest first."""
    from server.cli.kpi import api_client
    from server.customers.calls import call_public, list_calls
    from server.models import CallPublic

    client = api_client(config)
    if client is not None:
        params: dict[str, Any] = {"limit": limit}
        if customer:
            params["customer"] = customer
        if device:
            params["device_id"] = device
        try:
            page = client.calls(**params)
        finally:
            client.close()
        items = [CallPublic.model_validate(c) for c in page["items"]]
        total = int(page["count"])
    else:
        _, engine = open_database(config)
        try:
            with Session(engine) as session:
                rows, total = list_calls(
                    session, customer_number=customer, device_id=device, limit=limit
                )
                items = [call_public(c) for c in rows]
        finally:
            engine.dispose()
    if as_json:
        typer.echo(
            json.dumps({"items": [i.model_dump(mode="json") for i in items], "count": total})
        )
        return
    for c in items:
        answered = c.answered_at.strftime("%H:%M:%S") if c.answered_at else "-"
        typer.echo(
            f"#{c.id} {c.started_at:%Y-%m-%d %H:%M:%S} answered {answered} "
            f"{c.ani_e164 or c.ani} {c.customer_number or '-'} {c.device_id or '-'} "
            f"{c.operator or '-'}{f' incident #{c.incident_id}' if c.incident_id else ''}"
        )
    typer.echo(f"{total} call(s)")
