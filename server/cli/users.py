"""``fieldlink user ...``: operators, managers and administrators, their tokens and SSH keys.

These act on the server's database directly (``--config FILE`` or
``FIELDLINK_CONFIG``), so an administrator can bootstrap before any user exists.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlmodel import Session

from server import audit
from server.cli.common import ConfigOption, open_database, read_password
from shared.cli_help import examples
from shared.cli_language import N_, tr
from shared.errors import ConfigError

CustomersOption = Annotated[
    str | None,
    typer.Option(help="only these customers' devices: numbers, comma-separated (C-1001,C-1002)"),
]
RegionsOption = Annotated[
    str | None, typer.Option(help="only devices in these regions, comma-separated (EU,APAC)")
]

user_app = typer.Typer(
    help=N_("Manage site users, operators, managers and administrators."),
    epilog=examples(
        ("fieldlink user add olga --role operator", "password on stdin"),
        ("fieldlink user add ito --role site --customers C-1", "a site's IT"),
        ("fieldlink user disable bob", "ends its logins"),
    ),
    no_args_is_help=True,
)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="site, operator, manager or admin")] = "operator",
    customers: CustomersOption = None,
    regions: RegionsOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a user; the password is read from stdin when it is not a terminal.

    ``--customers``/``--regions`` limit what they see; a site user needs ``--customers``.
    """
    from server import crud
    from server.scope import parse_list

    _, engine = open_database(config)
    password = read_password(name)
    with Session(engine) as session:
        user = crud.create_user(
            session,
            username=name,
            role=role,
            password=password,
            actor=audit.cli_actor(),
            customers=parse_list(customers),
            regions=parse_list(regions),
        )
    typer.echo(
        tr("created %(role)s %(user)s", role=user.role, user=user.username)
        + _scope_text(user.customers, user.regions)
    )


@user_app.command("scope")
def user_scope(
    name: Annotated[str, typer.Argument(help="user name")],
    customers: CustomersOption = None,
    regions: RegionsOption = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="no limits: the user sees the whole fleet")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Set what a user sees: customers and regions (what is not given is left as it was)."""
    from server import accounts
    from server.scope import parse_list, split

    _, engine = open_database(config)
    with Session(engine) as session:
        user = accounts.get_user_or_404(session, username=name)
        wanted_customers = [] if clear else split(user.customers)
        wanted_regions = [] if clear else split(user.regions)
        if customers is not None:
            wanted_customers = parse_list(customers)
        if regions is not None:
            wanted_regions = parse_list(regions)
        user = accounts.set_scope(
            session,
            username=name,
            customers=wanted_customers,
            regions=wanted_regions,
            actor=audit.cli_actor(),
        )
    scope = _scope_text(user.customers, user.regions)
    if scope:
        typer.echo(tr("%(user)s sees%(scope)s", user=user.username, scope=scope))
    else:
        typer.echo(tr("%(user)s sees everything", user=user.username))


def _scope_text(customers: str | None, regions: str | None) -> str:
    parts = [
        tr("customers %(list)s", list=customers) if customers else "",
        tr("regions %(list)s", list=regions) if regions else "",
    ]
    shown = tr(" and ").join(p for p in parts if p)
    return f" ({shown})" if shown else ""


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
        msg = tr("--days: 1 to %(longest)s (api_token_max_days)", longest=longest)
        raise ConfigError(msg)
    with Session(engine) as session:
        user = crud.get_user(session, username=name)
        if user is None:
            msg = tr("no user %(user)r", user=name)
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
    from server import accounts, mfa

    _, engine = open_database(config)
    with Session(engine) as session:
        users, _count = accounts.list_users(session, limit=100_000)
        with_mfa = mfa.active_user_ids(session, [u.id for u in users if u.id is not None])
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "username": u.username,
                        "role": u.role,
                        "disabled": u.disabled,
                        "must_change_password": u.must_change_password,
                        "mfa_enabled": u.id in with_mfa,
                        "customers": [c for c in (u.customers or "").split(",") if c],
                        "regions": [r for r in (u.regions or "").split(",") if r],
                        "created_at": u.created_at.isoformat(),
                    }
                    for u in users
                ],
                indent=2,
            )
        )
        return
    heads = (tr("USER"), tr("ROLE"), tr("STATE"))
    width = max([len(heads[0]), *(len(u.username) for u in users)])
    role_width = max(8, len(heads[1]))
    typer.echo(f"{heads[0].ljust(width)}  {heads[1].ljust(role_width)}  {heads[2]}")
    for u in users:
        state = tr("disabled") if u.disabled else tr("enabled")
        if u.must_change_password:
            state += tr(", must change password")
        if u.id in with_mfa:
            state += tr(", two-factor")
        state += _scope_text(u.customers, u.regions)
        typer.echo(f"{u.username.ljust(width)}  {u.role.ljust(role_width)}  {state}")


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
    typer.echo(tr("disabled %(user)s", user=name))


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
    typer.echo(tr("enabled %(user)s", user=name))


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Argument(help="site, operator, manager or admin")],
    config: ConfigOption = None,
) -> None:
    """Change a user's role (what depended on the old one ends within seconds)."""
    from server import accounts

    _, engine = open_database(config)
    with Session(engine) as session:
        user = accounts.set_role(session, username=name, role=role, actor=audit.cli_actor())
    typer.echo(tr("%(user)s is now %(role)s", user=user.username, role=user.role))


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
    typer.echo(tr("removed %(user)s", user=name))


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
    typer.echo(tr("one-time password for %(user)s: %(password)s", user=name, password=temporary))
    typer.echo(tr("(their tokens are revoked; they must choose a new password at the next login)"))


@user_app.command("mfa-reset")
@user_app.command("reset-mfa", hidden=True)  # the first spelling, kept for scripts
def user_reset_mfa(
    name: Annotated[str, typer.Argument(help="user name")],
    config: ConfigOption = None,
) -> None:
    """Remove a user's two-factor login (a lost phone; audited): the password alone logs in
    next, and a role that requires it enrols again at once."""
    from server import mfa

    _, engine = open_database(config)
    with Session(engine) as session:
        had = mfa.reset(session, username=name, actor=audit.cli_actor())
    if had:
        typer.echo(
            tr(
                "two-factor login of %(user)s removed (they enrol again from the account page)",
                user=name,
            )
        )
    else:
        typer.echo(tr("%(user)s had no two-factor login", user=name))


@user_app.command("unlock")
def user_unlock(
    name: Annotated[str, typer.Argument(help="user name")],
    address: Annotated[
        str | None, typer.Option("--address", help="also lift this source address's lock")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Lift a login lockout: the user name's, and that of the addresses it failed from."""
    from server.logins import clear_failures

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
    if addresses:
        typer.echo(
            tr("unlocked %(user)s and %(addresses)s", user=name, addresses=", ".join(addresses))
        )
    else:
        typer.echo(tr("unlocked %(user)s", user=name))


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
    typer.echo(
        tr("added %(key)s (%(label)s) for %(user)s", key=key.fingerprint, label=key.name, user=name)
    )


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
        when = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else ""
        used = tr("last used %(when)s", when=when) if when else tr("never used")
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
    typer.echo(
        tr(
            "removed %(key)s (%(label)s) of %(user)s",
            key=removed.fingerprint,
            label=removed.name,
            user=name,
        )
    )
