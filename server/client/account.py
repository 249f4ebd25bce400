"""The operator's commands over the API: ``login``, ``passwd`` and ``devices``."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from server.client.api import ApiClient, save_credentials
from server.client.tables import echo_page
from shared.cli_help import help_text
from shared.cli_language import N_, tr
from shared.errors import AuthError, ConfigError

#: What the server's 401 says when a two-factor code is needed (the CLI then asks for it).
MFA_NEEDED = "two-factor code is required"


@help_text(N_("Log in to a fieldlink server and remember the token for the other commands."))
def login_command(
    server: Annotated[str, typer.Option(help=N_("server URL, e.g. https://fieldlink.example.com"))],
    user: Annotated[str | None, typer.Option("--user", "-u", help=N_("user name"))] = None,
    token: Annotated[
        str | None,
        typer.Option(help=N_("use this API token instead of a password"), envvar="FIELDLINK_TOKEN"),
    ] = None,
    otp: Annotated[
        str | None,
        typer.Option(help=N_("the two-factor code (asked for when the server wants one)")),
    ] = None,
) -> None:
    client = ApiClient(server, token)
    try:
        if token is None:
            if user is None:
                user = input(tr("user: ")) if sys.stdin.isatty() else sys.stdin.readline().strip()
            password = (
                getpass.getpass(tr("password for %(user)s: ", user=user))
                if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\r\n")
            )
            try:
                token = client.login(user, password, otp)
            except AuthError as exc:
                if otp or MFA_NEEDED not in str(exc):
                    raise
                code = (
                    input(tr("two-factor code: ")) if sys.stdin.isatty() else sys.stdin.readline()
                ).strip()
                token = client.login(user, password, code)
            client.close()
            client = ApiClient(server, token)
        me = client.me()
    finally:
        client.close()
    path = save_credentials(server, token, me["username"])
    typer.echo(
        tr(
            "logged in to %(server)s as %(user)s (%(role)s); token saved in %(path)s",
            server=server,
            user=me["username"],
            role=me["role"],
            path=path,
        )
    )
    if me.get("must_change_password"):
        typer.echo(
            tr("an administrator reset your password: choose a new one with `fieldlink passwd`")
        )


def _age(value: Any) -> str:
    return str(value or "-")[:19].replace("T", " ")


@help_text(N_("List the fleet (or find the caller's device) with online state and health."))
def devices_command(
    q: Annotated[
        str | None, typer.Argument(help=N_("search: id, serial, customer, site or phone"))
    ] = None,
    online: Annotated[
        bool | None, typer.Option("--online/--offline", help=N_("only online or offline devices"))
    ] = None,
    type_: Annotated[str | None, typer.Option("--type", help=N_("mfp, imaging or server"))] = None,
    customer: Annotated[str | None, typer.Option(help=N_("exact customer name"))] = None,
    limit: Annotated[int, typer.Option(help=N_("at most this many"))] = 100,
    as_json: Annotated[bool, typer.Option("--json", help=N_("print JSON"))] = False,
) -> None:
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("q", q), ("online", online), ("type", type_), ("customer", customer)):
        if value is not None:
            params[key] = value
    client = ApiClient.from_credentials()
    try:
        page = client.devices(**params)
    finally:
        client.close()
    echo_page(
        page,
        as_json=as_json,
        header=(
            tr("DEVICE"),
            tr("TYPE"),
            tr("CUSTOMER"),
            tr("ONLINE"),
            tr("STATUS"),
            tr("LAST SEEN"),
        ),
        row=lambda d: (
            d["id"],
            d["type"],
            d["customer"][:28],
            tr("online")
            if d["online"]
            else tr("offline (%(reason)s)", reason=d.get("online_reason") or "-"),
            d.get("status") or "-",
            _age(d.get("last_seen")),
        ),
        noun=tr("devices"),
    )


@help_text(N_("Change your password on the server you logged in to (your other logins end)."))
def passwd_command() -> None:
    if sys.stdin.isatty():
        current = getpass.getpass(tr("current password: "))
        new = getpass.getpass(tr("new password: "))
        if getpass.getpass(tr("new password again: ")) != new:
            msg = tr("the new passwords differ")
            raise ConfigError(msg)
    else:  # scripts: the current password, then the new one, one per line
        current = sys.stdin.readline().rstrip("\r\n")
        new = sys.stdin.readline().rstrip("\r\n")
    if not current or not new:
        msg = tr("give the current and the new password (on the terminal, or two lines on stdin)")
        raise ConfigError(msg)
    client = ApiClient.from_credentials()
    try:
        client.change_password(current, new)
    finally:
        client.close()
    typer.echo(tr("password changed"))
