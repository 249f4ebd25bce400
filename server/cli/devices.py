"""``fieldlink device add|revoke|token``: register devices and end their access.

These act on the server's database and CA directly (``--config FILE`` or
``FIELDLINK_CONFIG``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlmodel import Session

from server import audit
from server.cli.common import ConfigOption, open_database
from shared.cli_help import examples
from shared.cli_language import N_, tr
from shared.errors import ConfigError

device_app = typer.Typer(
    help=N_("Register and manage devices."),
    epilog=examples(
        ("fieldlink device add --serial XK-42 --model M --type mfp", "register one"),
        ("fieldlink device token mfp-0042", "to enroll it"),
        ("fieldlink device revoke mfp-0042", "revoke it"),
    ),
    no_args_is_help=True,
)


@device_app.command("add")
def device_add(
    serial: Annotated[str, typer.Option(help="serial number")],
    model: Annotated[str, typer.Option(help="model name")],
    type_: Annotated[str, typer.Option("--type", help="mfp, imaging or server")],
    customer: Annotated[str, typer.Option(help="customer name")],
    site: Annotated[str | None, typer.Option(help="site")] = None,
    region: Annotated[str | None, typer.Option(help="region")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="the site's contact phone")] = None,
    device_id: Annotated[
        str | None, typer.Option("--id", help="device id (default: TYPE-SERIAL)")
    ] = None,
    via: Annotated[
        str | None,
        typer.Option(
            "--via",
            metavar="GATEWAY_ID",
            help="watched over the network by this gateway's agent (no enrollment token)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Register a device; prints its id and a one-time enrollment token."""
    from pydantic import ValidationError

    from server import crud
    from server.models import DeviceCreate

    _, engine = open_database(config)
    try:
        data = DeviceCreate(
            id=device_id,
            serial=serial,
            model=model,
            type=type_,
            customer=customer,
            site=site,
            region=region,
            contact_phone=phone,
            via=via,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        msg = f"--{first['loc'][0]}: {first['msg']}"
        raise ConfigError(msg) from exc
    with Session(engine) as session:
        device, token = crud.register_device(session, data=data, actor=audit.cli_actor())
    if as_json:
        typer.echo(json.dumps({"id": device.id, "via": device.via, "enrollment_token": token}))
    elif token is None:
        _facts(
            (tr("device:"), device.id),
            (
                tr("watched via:"),
                tr("%(via)s (list it in that agent's [[agent.devices]])", via=device.via),
            ),
        )
    else:
        _facts((tr("device:"), device.id), (tr("enrollment token:"), token))
        until = f"{device.enrollment_expires_at:%Y-%m-%d %H:%M}"
        typer.echo(tr("(valid until %(when)s UTC, usable once)", when=until))


def _facts(*lines: tuple[str, str]) -> None:
    """``label  value`` lines, the values aligned."""
    width = max(len(label) for label, _value in lines) + 1
    for label, value in lines:
        typer.echo(f"{label:<{width}}{value}")


@device_app.command("revoke")
def device_revoke(
    device_id: Annotated[str, typer.Argument(help="the device to revoke")],
    config: ConfigOption = None,
    wait: Annotated[
        float,
        typer.Option(help="seconds to wait for the broker's reload helper (reload_by = helper)"),
    ] = 10.0,
) -> None:
    """Revoke a device: refused at once by the server; the broker's update is applied or queued."""
    from provisioning.broker_update import update_broker, wait_until_applied
    from provisioning.ca import CertificateAuthority
    from server import crud

    settings, engine = open_database(config)
    ca = CertificateAuthority.load(settings.state_dir)
    with Session(engine) as session:
        device = crud.revoke_device(session, ca=ca, device_id=device_id, actor=audit.cli_actor())
    typer.echo(tr("revoked %(id)s: the server refuses it from now on", id=device.id))
    state = update_broker(ca.paths, device_id=device_id)
    if state.pending and state.reload_by == "helper":
        state = wait_until_applied(ca.paths, state.generation, wait)
    if state.state == "applied":
        typer.echo(tr("broker: applied (it reloaded its CRL and ACL and refuses the device)"))
    elif state.state == "unmanaged":
        typer.echo(
            tr(
                "broker: not managed here (no `fieldlink broker-config` folder): "
                "update its CRL and send it SIGHUP yourself"
            )
        )
    else:
        if state.pending_since:
            typer.echo(
                tr(
                    "broker: pending since %(since)s; the server retries until the broker has it",
                    since=state.public()["pending_since"],
                )
            )
        else:
            typer.echo(tr("broker: pending; the server retries until the broker has it"))
        if state.last_error:
            typer.echo(tr("last error: %(error)s", error=state.last_error))


@device_app.command("token")
def device_token(
    device_id: Annotated[str, typer.Argument(help="the device")],
    hours: Annotated[float, typer.Option(help="how long the token works")] = 24.0,
    config: ConfigOption = None,
) -> None:
    """Issue a fresh one-time enrollment token (for a new device, or to enroll one again)."""
    from datetime import timedelta

    from server import crud

    _, engine = open_database(config)
    with Session(engine) as session:
        device, token = crud.new_enrollment_token(
            session, device_id=device_id, token_ttl=timedelta(hours=hours), actor=audit.cli_actor()
        )
    typer.echo(tr("enrollment token for %(id)s: %(token)s", id=device.id, token=token))
