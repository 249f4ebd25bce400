"""The center's commands: ``server run`` and the administrative ``user`` and ``device`` groups.

Administrative commands act on the server's database directly (``--config
FILE`` or ``FIELDLINK_CONFIG``), so an administrator can bootstrap before any
user exists.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit
from server.config import DEFAULT_CONFIG, ServerSettings, load_server_settings
from shared.errors import ConfigError
from shared.tomlfile import CONFIG_ENV, resolve_config_path

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="server.toml (default: $FIELDLINK_CONFIG or /etc/fieldlink/server.toml)",
    ),
]

server_app = typer.Typer(help="Run the fieldlink server.", no_args_is_help=True)
user_app = typer.Typer(help="Manage operators, managers and administrators.", no_args_is_help=True)
device_app = typer.Typer(help="Register and manage devices.", no_args_is_help=True)


def find_config(config: Path | None) -> Path:
    """The server's config file: ``--config``, ``FIELDLINK_CONFIG`` or the default file.

    Administrative commands act on a server's database: on built-in defaults they
    would quietly create an empty one under ``/var/lib/fieldlink`` and report on it.

    Raises:
        ConfigError: when there is none.
    """
    found = resolve_config_path(config, DEFAULT_CONFIG)
    if found is None:
        msg = (
            f"no configuration found: give --config FILE, set {CONFIG_ENV}, "
            f"or write {DEFAULT_CONFIG}"
        )
        raise ConfigError(msg)
    return found


def config_hint(config: Path | None) -> str:
    """`` --config FILE`` for next-step hints, when the user gave one."""
    return f" --config {config}" if config is not None else ""


def open_database(config: Path | None) -> tuple[ServerSettings, Engine]:
    """Settings and a migrated database engine for an administrative command."""
    from server.db import create_schema, make_engine

    settings = load_server_settings(find_config(config))
    engine = make_engine(settings.database_url)
    create_schema(engine)
    return settings, engine


def _register_init_config() -> None:
    from server.config_sample import init_config

    server_app.command("init-config")(init_config)


_register_init_config()


@server_app.command("run")
def run(config: ConfigOption = None) -> None:
    """Run the server: HTTP API and console, ingest, sessions."""
    from server.runner import serve
    from shared.logs import configure_logging

    settings = load_server_settings(config)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


def _read_password(username: str) -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {username}: ")
        if getpass.getpass("again: ") != password:
            msg = "the passwords differ"
            raise ConfigError(msg)
    if not password:
        msg = "no password given (pipe it on stdin or type it at the prompt)"
        raise ConfigError(msg)
    return password


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="operator, manager or admin")] = "operator",
    config: ConfigOption = None,
) -> None:
    """Create a user; the password is read from stdin when it is not a terminal."""
    from server import crud

    _, engine = open_database(config)
    password = _read_password(name)
    with Session(engine) as session:
        user = crud.create_user(
            session, username=name, role=role, password=password, actor=audit.cli_actor()
        )
    typer.echo(f"created {user.role} {user.username}")


@user_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(help="user name")],
    label: Annotated[str, typer.Option("--name", help="what the token is for")] = "api",
    days: Annotated[
        int | None,
        typer.Option(help="how long it works (default and at most: api_token_max_days)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Issue an API token for scripts (shown once); it expires."""
    from datetime import timedelta

    from server import crud
    from shared.errors import NotFound

    settings, engine = open_database(config)
    longest = settings.api_token_max_days
    if days is not None and not 1 <= days <= longest:
        msg = f"--days: 1 to {longest} (api_token_max_days)"
        raise ConfigError(msg)
    with Session(engine) as session:
        user = crud.get_user(session, username=name)
        if user is None:
            msg = f"no user {name!r}"
            raise NotFound(msg)
        token, _ = crud.issue_token(
            session,
            user=user,
            kind="api",
            ttl=timedelta(days=days or longest),
            name=label,
            actor=audit.cli_actor(),
        )
    typer.echo(token)


@user_app.command("list")
def user_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """List the users with their roles and whether they are disabled."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        users, _count = accounts.list_users(session, limit=100_000)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "username": u.username,
                        "role": u.role,
                        "disabled": u.disabled,
                        "must_change_password": u.must_change_password,
                        "created_at": u.created_at.isoformat(),
                    }
                    for u in users
                ],
                indent=2,
            )
        )
        return
    width = max([len("USER"), *(len(u.username) for u in users)])
    typer.echo(f"{'USER'.ljust(width)}  {'ROLE'.ljust(8)}  STATE")
    for u in users:
        state = "disabled" if u.disabled else "enabled"
        if u.must_change_password:
            state += ", must change password"
        typer.echo(f"{u.username.ljust(width)}  {u.role.ljust(8)}  {state}")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """Disable a user: their tokens are revoked, their live sessions end within seconds."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        accounts.set_disabled(session, username=name, disabled=True, actor=audit.cli_actor())
    typer.echo(f"disabled {name}")


@user_app.command("enable")
def user_enable(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """Enable a disabled user again (they log in anew: their old tokens stay revoked)."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        accounts.set_disabled(session, username=name, disabled=False, actor=audit.cli_actor())
    typer.echo(f"enabled {name}")


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Argument(help="operator, manager or admin")],
    config: ConfigOption = None,
) -> None:
    """Change a user's role (what depended on the old one ends within seconds)."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        user = accounts.set_role(session, username=name, role=role, actor=audit.cli_actor())
    typer.echo(f"{user.username} is now {user.role}")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """Remove a user with their tokens and SSH keys (the audit log keeps the name)."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        accounts.remove_user(session, username=name, actor=audit.cli_actor())
    typer.echo(f"removed {name}")


@user_app.command("reset-password")
def user_reset_password(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """Give a user a one-time password, to be changed at the next login (shown once)."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        temporary = accounts.reset_password(session, username=name, actor=audit.cli_actor())
    typer.echo(f"one-time password for {name}: {temporary}")
    typer.echo("(their tokens are revoked; they must choose a new password at the next login)")


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
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        msg = f"--{first['loc'][0]}: {first['msg']}"
        raise ConfigError(msg) from exc
    with Session(engine) as session:
        device, token = crud.register_device(session, data=data, actor=audit.cli_actor())
    if as_json:
        typer.echo(json.dumps({"id": device.id, "enrollment_token": token}))
    else:
        typer.echo(f"device:           {device.id}")
        typer.echo(f"enrollment token: {token}")
        typer.echo(f"(valid until {device.enrollment_expires_at:%Y-%m-%d %H:%M} UTC, usable once)")


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
    typer.echo(f"revoked {device.id}: the server refuses it from now on")
    state = update_broker(ca.paths, device_id=device_id)
    if state.pending and state.reload_by == "helper":
        state = wait_until_applied(ca.paths, state.generation, wait)
    if state.state == "applied":
        typer.echo("broker: applied (it reloaded its CRL and ACL and refuses the device)")
    elif state.state == "unmanaged":
        typer.echo(
            "broker: not managed here (no `fieldlink broker-config` folder): "
            "update its CRL and send it SIGHUP yourself"
        )
    else:
        since = f" since {state.public()['pending_since']}" if state.pending_since else ""
        typer.echo(f"broker: pending{since}; the server retries until the broker has it")
        if state.last_error:
            typer.echo(f"last error: {state.last_error}")


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
    typer.echo(f"enrollment token for {device.id}: {token}")


@user_app.command("unlock")
def user_unlock(
    name: Annotated[str, typer.Argument(help="user name")],
    address: Annotated[
        str | None, typer.Option("--address", help="also lift this source address's lock")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Lift a login lockout: the user name's, and that of the addresses it failed from."""
    from server.api.routes.auth import clear_failures

    _, engine = open_database(config)
    with Session(engine) as session:
        addresses = clear_failures(session, username=name, address=address)
        audit.record(
            session,
            actor=audit.cli_actor(),
            action="user.unlock",
            target=f"user:{name}",
            details={"addresses": addresses},
        )
        session.commit()
    typer.echo(f"unlocked {name}" + (f" and {', '.join(addresses)}" if addresses else ""))


@user_app.command("add-key")
def user_add_key(
    name: Annotated[str, typer.Argument(help="user name")],
    file: Annotated[str, typer.Argument(help="the .pub file (- reads stdin)")],
    label: Annotated[
        str | None, typer.Option("--name", help="a label (default: the key's comment)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Register a public key for the SSH gateway (ssh -p 2222 DEVICE@server)."""
    from server.gateway.keys import add_key, read_key_file

    _, engine = open_database(config)
    text = read_key_file(file)
    with Session(engine) as session:
        key = add_key(session, username=name, public_key=text, name=label, actor=audit.cli_actor())
    typer.echo(f"added {key.fingerprint} ({key.name}) for {name}")


@user_app.command("keys")
def user_keys(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """List a user's SSH gateway keys."""
    from server.gateway.keys import list_keys

    _, engine = open_database(config)
    with Session(engine) as session:
        keys = list_keys(session, username=name)
    for key in keys:
        used = f"last used {key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never used"
        key_type = key.public_key.split()[0]
        typer.echo(f"{key.id}  {key.fingerprint}  {key_type}  {key.name}  ({used})")


@user_app.command("remove-key")
def user_remove_key(
    name: Annotated[str, typer.Argument(help="user name")],
    key: Annotated[str, typer.Argument(help="the key's fingerprint (SHA256:...), id or name")],
    config: ConfigOption = None,
) -> None:
    """Remove one of a user's SSH gateway keys."""
    from server.gateway.keys import remove_key

    _, engine = open_database(config)
    with Session(engine) as session:
        removed = remove_key(session, username=name, key=key, actor=audit.cli_actor())
    typer.echo(f"removed {removed.fingerprint} ({removed.name}) of {name}")
