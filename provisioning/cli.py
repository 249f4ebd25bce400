"""``fieldlink ca ...`` and ``fieldlink broker-config``: the center's identity commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from provisioning.broker import DEFAULT_BROKER_USER, DEFAULT_PORT, write_broker_config
from provisioning.ca import KEY_TYPES, CaError, CertificateAuthority, KeyType, common_name
from server.cli import find_config
from server.config import ServerSettings, load_server_settings
from shared.ids import isoformat_z

logger = logging.getLogger(__name__)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="server.toml (default: FIELDLINK_CONFIG or /etc/fieldlink)"
    ),
]

ca_app = typer.Typer(
    name="ca",
    help="The device CA: certificates for devices, the broker and the server.",
    no_args_is_help=True,
)


def _hostnames_from(settings: ServerSettings) -> list[str]:
    """The hosts devices will dial: those of broker_url and public_url."""
    names = []
    for url in (settings.broker_url, settings.public_url):
        if url and "://" in url:
            host = urlsplit(url).hostname
            if host:
                names.append(host)
    return names


@ca_app.command("init")
def ca_init(
    config: ConfigOption = None,
    key_type: Annotated[
        str,
        typer.Option(
            "--key-type",
            help="ec-p256 (default) or rsa-2048 for fleets whose TLS stacks only know RSA",
        ),
    ] = "ec-p256",
    hostname: Annotated[
        list[str] | None,
        typer.Option("--hostname", help="a DNS name or IP devices use for the broker (repeatable)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing CA (every device must re-enroll)")
    ] = False,
) -> None:
    """Create the device CA, the command-signing key, and the broker's and server's certificates."""
    if key_type not in KEY_TYPES:
        msg = f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}"
        raise CaError(msg)
    settings = load_server_settings(find_config(config))
    hostnames = [*_hostnames_from(settings), *(hostname or [])]
    chosen: KeyType = "rsa-2048" if key_type == "rsa-2048" else "ec-p256"
    ca = CertificateAuthority.init(
        settings.state_dir, key_type=chosen, hostnames=hostnames, force=force
    )
    paths = ca.paths
    typer.echo(f"created {chosen} CA {common_name(ca.cert)!r} in {paths.root}")
    typer.echo(f"  CA certificate:        {paths.ca_cert}")
    typer.echo(f"  command-signing key:   {paths.command_key}")
    typer.echo(
        f"  broker certificate:    {paths.broker_cert} (names: localhost, 127.0.0.1, ::1"
        + "".join(f", {name}" for name in hostnames)
        + ")"
    )
    typer.echo("  server MQTT identity: add to [server] in server.toml:")
    typer.echo(f'    broker_ca = "{paths.ca_cert}"')
    typer.echo(f'    broker_cert = "{paths.server_client_cert}"')
    typer.echo(f'    broker_key = "{paths.server_client_key}"')
    given = f" --config {config}" if config is not None else ""
    typer.echo(f"next: fieldlink broker-config --out /etc/mosquitto/fieldlink{given}")


@ca_app.command("show")
def ca_show(config: ConfigOption = None) -> None:
    """Show the CA, its files, the certificates it issued and what it revoked."""
    settings = load_server_settings(find_config(config))
    ca = CertificateAuthority.load(settings.state_dir)
    cert = ca.cert
    typer.echo(f"CA:            {common_name(cert)} ({ca.key_type})")
    typer.echo(f"folder:        {ca.paths.root}")
    typer.echo(
        f"valid:         {isoformat_z(cert.not_valid_before_utc)} .. "
        f"{isoformat_z(cert.not_valid_after_utc)}"
    )
    next_update = ca.crl_next_update()
    typer.echo(f"CRL valid to:  {isoformat_z(next_update) if next_update else 'no CRL'}")
    issued = ca.issued_certificates()
    revoked = ca.revoked_serials()
    typer.echo(f"issued:        {len(issued)} device certificate(s), {len(revoked)} revoked")
    for item in issued:
        state = "revoked" if item.serial in revoked else "valid"
        typer.echo(
            f"  {item.common_name:<32} {item.serial_hex:<40} "
            f"until {isoformat_z(item.not_after)}  {state}"
        )


def broker_config_command(
    out: Annotated[Path, typer.Option("--out", help="folder to write mosquitto.conf, acl, certs")],
    config: ConfigOption = None,
    port: Annotated[int, typer.Option("--port", help="TLS listener port")] = DEFAULT_PORT,
    bind_address: Annotated[
        str | None, typer.Option("--bind", help="listen on this address only")
    ] = None,
    broker_user: Annotated[
        str, typer.Option("--broker-user", help="give the broker's files to this user when root")
    ] = DEFAULT_BROKER_USER,
    pid_file: Annotated[
        Path | None, typer.Option("--pid-file", help="the broker's pid file, for SIGHUP on revoke")
    ] = None,
    reload_command: Annotated[
        str | None,
        typer.Option("--reload-command", help="e.g. 'systemctl reload mosquitto', run on revoke"),
    ] = None,
) -> None:
    """Write the Mosquitto configuration, ACL and CRL for this server's broker."""
    settings = load_server_settings(find_config(config))
    ca = CertificateAuthority.load(settings.state_dir)
    written = write_broker_config(
        ca,
        out,
        port=port,
        bind_address=bind_address,
        broker_user=broker_user,
        pid_file=pid_file,
        reload_command=reload_command,
    )
    typer.echo(f"wrote {written.conf}, {written.acl}, certificates and CRL in {written.directory}")
    typer.echo(f"run: mosquitto -c {written.conf}   (TLS on port {written.port})")
    if pid_file is None and reload_command is None:
        typer.echo(
            "note: no --pid-file or --reload-command: after a revocation, send the broker "
            "SIGHUP (systemctl reload mosquitto) for it to take effect"
        )
