"""``fieldlink ca ...``, ``broker-config`` and ``broker-reload``: the center's identity commands.

The library they drive is :mod:`provisioning` (the CA, the broker's files and
their updates); these commands find it through the server's configuration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from provisioning.broker import (
    DEFAULT_BROKER_USER,
    DEFAULT_PORT,
    DEFAULT_SERVER_PORT,
    BrokerTargets,
    server_password_path,
    write_broker_config,
)
from provisioning.broker_update import apply_broker_update, load_update_state
from provisioning.ca import CertificateAuthority
from provisioning.certificates import KEY_TYPES, KeyType
from provisioning.pki import CaNotInitialized, PkiPaths, common_name
from server.cli.common import ConfigOption, find_config
from server.config import ServerSettings, load_server_settings
from shared.cli_help import examples, help_text
from shared.cli_language import N_, tr
from shared.errors import ConfigError, InvalidInput, UnavailableError
from shared.ids import isoformat_z

logger = logging.getLogger(__name__)

ca_app = typer.Typer(
    name="ca",
    help=N_("The device CA: certificates for devices, the broker and the server."),
    epilog=examples(
        ("fieldlink ca init --config server.toml", "once, first"),
        ("fieldlink ca show --config server.toml", "what it holds"),
        ("fieldlink broker-config --out /etc/mosquitto/fl", "the broker's files"),
    ),
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
        msg = tr(
            "unknown key type %(type)r: use one of %(choices)s",
            type=key_type,
            choices=", ".join(KEY_TYPES),
        )
        raise InvalidInput(msg)
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
    update = load_update_state(ca.paths)
    broker: str = update.state
    if update.pending:
        broker += f" since {isoformat_z(update.pending_since)}" if update.pending_since else ""
        broker += f" ({update.attempts} failed: {update.last_error})" if update.last_error else ""
    typer.echo(f"broker:        {broker} (reload by {update.reload_by})")
    issued = ca.issued_certificates()
    revoked = ca.revoked_serials()
    typer.echo(f"issued:        {len(issued)} device certificate(s), {len(revoked)} revoked")
    for item in issued:
        state = "revoked" if item.serial in revoked else "valid"
        typer.echo(
            f"  {item.common_name:<32} {item.serial_hex:<40} "
            f"until {isoformat_z(item.not_after)}  {state}"
        )


@help_text(N_("Write the Mosquitto configuration, ACL and CRL for this server's broker."))
def broker_config_command(
    out: Annotated[Path, typer.Option("--out", help="folder to write mosquitto.conf, acl, certs")],
    config: ConfigOption = None,
    port: Annotated[int, typer.Option("--port", help="devices' TLS port")] = DEFAULT_PORT,
    bind_address: Annotated[
        str | None, typer.Option("--bind", help="listen on this address only")
    ] = None,
    server_port: Annotated[
        int, typer.Option("--server-port", help="the server's TLS listener port (password too)")
    ] = DEFAULT_SERVER_PORT,
    server_bind_address: Annotated[
        str | None,
        typer.Option("--server-bind", help="the server's listener on this address only"),
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
    reload_by: Annotated[
        str,
        typer.Option(
            "--reload-by",
            help="server: the server writes this folder and signals the broker; helper: "
            "`fieldlink broker-reload` does (systemd fieldlink-broker-reload.path)",
        ),
    ] = "server",
) -> None:
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
        reload_by=reload_by,
        server_port=server_port,
        server_bind_address=server_bind_address,
    )
    typer.echo(f"wrote {written.conf}, {written.acl}, certificates and CRL in {written.directory}")
    typer.echo(
        f"run: mosquitto -c {written.conf}   (devices on TLS port {written.port}, "
        f"the server on {written.server_port})"
    )
    typer.echo(
        f"server: broker_url = mqtts://BROKER-HOST:{written.server_port}, "
        f"device_broker_url = mqtts://BROKER-HOST:{written.port}; its broker password is in "
        f"{server_password_path(ca)} (read from there unless broker_password is set)"
    )
    how = f"`{reload_command}`" if reload_command else f"SIGHUP to the pid in {written.pid_file}"
    who = (
        "fieldlink broker-reload (enable fieldlink-broker-reload.path)"
        if reload_by == "helper"
        else "the server"
    )
    typer.echo(f"revocations and renewals reach the broker through {who}: {how}")


@help_text(
    N_(
        "Apply the pending broker update: copy CRL, ACL and certificate, make the broker reload.\n"
        "\n"
        "Run by fieldlink-broker-reload.service with the rights to write the broker's folder and\n"
        "signal it. It reads the server's PKI folder (never the CA's key) and, as root, takes the\n"
        "folder and the reload from its own options, not from a file the server could rewrite."
    )
)
def broker_reload_command(
    config: ConfigOption = None,
    broker_dir: Annotated[
        list[Path] | None,
        typer.Option("--dir", help="the broker's folder (as given to broker-config --out)"),
    ] = None,
    pid_file: Annotated[
        Path | None, typer.Option("--pid-file", help="the broker's pid file, signalled with SIGHUP")
    ] = None,
    reload_command: Annotated[
        str | None,
        typer.Option("--reload-command", help="or a command that makes the broker reload"),
    ] = None,
) -> None:
    settings = load_server_settings(find_config(config))
    paths = PkiPaths.under(settings.state_dir)
    if not paths.ca_cert.exists():
        msg = tr("no CA in %(path)s: run `fieldlink ca init` first", path=paths.root)
        raise CaNotInitialized(msg)
    targets: BrokerTargets | None = None
    if broker_dir:
        if pid_file is None and reload_command is None:
            msg = tr("--dir needs --pid-file or --reload-command")
            raise ConfigError(msg)
        targets = BrokerTargets(
            dirs=[str(d.resolve()) for d in broker_dir],
            pid_file=str(pid_file) if pid_file else None,
            reload_command=reload_command,
        )
    elif os.geteuid() == 0:
        msg = tr("as root, give --dir and --pid-file (or --reload-command) explicitly")
        raise ConfigError(msg)
    state = apply_broker_update(paths, targets=targets)
    if targets is None and state.state == "unmanaged":
        typer.echo(tr("no broker folder is configured: run `fieldlink broker-config --out DIR`"))
        return
    if state.last_error and state.pending:
        raise UnavailableError(state.last_error)
    typer.echo(tr("broker update %(generation)s applied", generation=state.applied_generation))
