"""Mosquitto configuration for one fieldlink server: TLS listener, ACL, CRL, and their reload.

``fieldlink broker-config --out DIR`` writes into DIR everything Mosquitto
2.0 needs to serve the fleet: ``mosquitto.conf``, ``acl``, copies of the CA
certificate, the broker's certificate and key, and the CRL. Copies, because
Mosquitto drops to its own user before it reads them and the server's
``state_dir/pki`` is private (0700).

Two TLS listeners, each with its own security settings (``per_listener_settings``);
every client on either must present a certificate of the device CA
(``require_certificate``):

- the devices' listener (``port``, 8883): the certificate's CN becomes the MQTT
  username (``use_identity_as_username``) *and the client id*
  (``use_username_as_clientid``): whatever client id a device asks for, the broker
  uses its CN, so no device can take over (and kick off) another device's session
  by connecting with its client id. The ACL confines each device to its own topics
  through ``pattern`` lines on ``%u``.
- the server's listener (``server_port``, 8884): the server's processes need client
  ids of their own (several connections under one identity), so here the client id
  is the client's, and the username ``fieldlink_server`` must come with the
  server's broker password (``password_file``, checked before the broker looks at
  the client id, so a device's certificate alone gets nowhere near a session).
  The password is made once, kept in ``state_dir/pki/broker-server-password``
  (0600), where the server finds it.

The server's identity (``fieldlink_server``, never a valid device id) reads and
writes everything under ``fieldlink/v1/``. Nobody else may do anything.

Mosquitto 2.0's ACL file does not check SUBSCRIBE at all (``acl_file`` grants
every subscription and only filters delivery), so it cannot stop a device from
joining the server's shared subscription ``$share/<group>/...``, which would
hand it a share of the fleet's messages that the delivery check then drops. The
server's group name is therefore a secret of the center (:func:`ingest_group`),
not a constant a device can know.

Revocation takes effect on SIGHUP: Mosquitto 2.0 reloads the CRL (new TLS
connections with a revoked certificate fail) and the ACL (checked on every
publish and delivery). A revoked device that is still connected keeps its TCP
connection (the CRL is only consulted at the handshake), so the ACL also gets
a ``deny`` block for each revoked device: from the reload on, it can neither
publish nor receive anything. :func:`publish_revocations` writes both files
into every folder ``broker-config`` wrote to and signals the broker, by pid
file (the generated ``mosquitto.conf`` sets ``pid_file``), by pid, or with a
configured command (``systemctl reload mosquitto``: Debian's unit reloads with
SIGHUP). SIGHUP also reloads the broker's own certificate and key (renewal).
:mod:`provisioning.broker_update` queues that update and retries it until the
broker has it. Verified against Mosquitto 2.0.11.

The files' text is made by :mod:`provisioning.mosquitto_conf` (re-exported here).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pwd
import secrets
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from provisioning.ca import CertificateAuthority, hand_back_to_owner
from provisioning.mosquitto_conf import DEFAULT_PORT as DEFAULT_PORT
from provisioning.mosquitto_conf import DEFAULT_SERVER_PORT as DEFAULT_SERVER_PORT
from provisioning.mosquitto_conf import FILE_NAMES as FILE_NAMES
from provisioning.mosquitto_conf import PASSWORD_HASH_ITERATIONS as PASSWORD_HASH_ITERATIONS
from provisioning.mosquitto_conf import render_acl as render_acl
from provisioning.mosquitto_conf import render_mosquitto_conf as render_mosquitto_conf
from provisioning.mosquitto_conf import render_password_file as render_password_file
from shared.errors import ConfigError, FieldlinkError, UnavailableError
from shared.signing import write_file_atomic

logger = logging.getLogger(__name__)

#: The file under ``state_dir/pki`` that holds the server's broker password.
SERVER_PASSWORD_FILE: Final = "broker-server-password"  # noqa: S105  (a file name)
DEFAULT_BROKER_USER: Final = "mosquitto"


class BrokerConfigError(FieldlinkError):
    """The broker configuration cannot be written or the broker cannot be told to reload."""


@dataclass
class BrokerTargets:
    """Where ``broker-config`` wrote its files and how to make the broker reload them.

    Kept in ``state_dir/pki/broker-targets.json`` so that a revocation from
    the server or the CLI reaches every broker configured for this CA.
    """

    dirs: list[str] = field(default_factory=list)
    pid_file: str | None = None
    reload_command: str | None = None
    #: ``server``: the server and the CLI write the folders and signal the broker themselves;
    #: ``helper``: ``fieldlink broker-reload`` does it (systemd ``fieldlink-broker-reload.path``).
    reload_by: str = "server"

    @classmethod
    def load(cls, path: Path) -> BrokerTargets:
        """Read the targets (none yet when the file does not exist)."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            msg = f"{path} is damaged: {exc}"
            raise BrokerConfigError(msg) from exc
        return cls(
            dirs=list(data.get("dirs", [])),
            pid_file=data.get("pid_file"),
            reload_command=data.get("reload_command"),
            reload_by=data.get("reload_by", "server"),
        )

    def save(self, path: Path) -> None:
        """Write the targets atomically."""
        data = {
            "dirs": self.dirs,
            "pid_file": self.pid_file,
            "reload_command": self.reload_command,
            "reload_by": self.reload_by,
        }
        write_file_atomic(path, json.dumps(data, indent=1).encode(), mode=0o600)


def server_password_path(ca: CertificateAuthority) -> Path:
    """Where the server's broker password is kept (``state_dir/pki``, 0600)."""
    return ca.paths.root / SERVER_PASSWORD_FILE


def server_broker_password(ca: CertificateAuthority, *, create: bool = True) -> str | None:
    """The server's broker password: made once (256 random bits), then always the same.

    Returns ``None`` when there is none yet and ``create`` is false.
    """
    path = server_password_path(ca)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
    password = secrets.token_urlsafe(32)
    write_file_atomic(path, password.encode(), mode=0o600)
    return password


def ingest_group(ca: CertificateAuthority) -> str:
    """The server's shared-subscription group: a name no device can know or guess.

    Derived from the center's command-signing key (every server process of a
    center holds it), so all of them land in the same group with nothing more
    to configure or keep in step; ``fieldlink-ingest-`` and 32 hex digits.
    """
    key = ca.command_signing_key().private_bytes_raw()
    digest = hmac.new(key, b"fieldlink mqtt ingest group v1", hashlib.sha256).hexdigest()
    return f"fieldlink-ingest-{digest[:32]}"


def _broker_uid(broker_user: str | None) -> int | None:
    """The uid to give the broker's files to, when we are root and the user exists."""
    if broker_user is None or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(broker_user).pw_uid
    except KeyError:
        return None


def _place(path: Path, data: bytes, mode: int, uid: int | None) -> None:
    write_file_atomic(path, data, mode=mode)
    if uid is not None:
        os.chown(path, uid, -1)


def _revoked_device_ids(ca: CertificateAuthority) -> list[str]:
    return sorted({entry.device_id for entry in ca.revoked() if entry.device_id})


@dataclass(frozen=True)
class BrokerConfig:
    """The files ``broker-config`` wrote."""

    directory: Path
    conf: Path
    acl: Path
    crl: Path
    port: int
    pid_file: Path
    #: The server's listener (password and certificate).
    server_port: int = DEFAULT_SERVER_PORT


def write_broker_config(
    ca: CertificateAuthority,
    out_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    bind_address: str | None = None,
    broker_user: str | None = DEFAULT_BROKER_USER,
    persistence: bool = True,
    pid_file: Path | None = None,
    reload_command: str | None = None,
    reload_by: str = "server",
    server_port: int = DEFAULT_SERVER_PORT,
    server_bind_address: str | None = None,
) -> BrokerConfig:
    """Write a Mosquitto configuration for this CA's broker into ``out_dir``.

    Args:
        ca: The server's device CA (its broker certificate must exist: ``ca init``).
        out_dir: The folder to write to; created 0755, files the broker reads in it.
        port: The TLS listener's port.
        bind_address: Listen on this address only (default: all).
        broker_user: When run as root, the broker's key, CRL and ACL are given to
            this user (Mosquitto reads them after dropping to it).
        persistence: Keep queued QoS 1 messages across broker restarts (in ``out_dir/data``).
        pid_file: Mosquitto's pid file, signalled with SIGHUP on revocation (default:
            ``out_dir/run/mosquitto.pid``, that folder given to ``broker_user``); the
            generated ``mosquitto.conf`` sets it.
        reload_command: Or a command that makes it reload (``systemctl reload mosquitto``).
        reload_by: ``server`` (the server writes the folder and signals the broker) or
            ``helper`` (``fieldlink broker-reload`` does, started by systemd).
        server_port: The server's own TLS listener (password and certificate).
        server_bind_address: Listen on this address only for the server (default: all).

    Returns:
        Where the files are.
    """
    for number in (port, server_port):
        if not 0 < number < 65536:
            msg = f"port {number} is out of range"
            raise ConfigError(msg)
    if port == server_port:
        msg = f"the devices' and the server's listeners need two ports, not {port} twice"
        raise ConfigError(msg)
    if reload_by not in ("server", "helper"):
        msg = f"reload_by must be server or helper, not {reload_by!r}"
        raise ConfigError(msg)
    out_dir = out_dir.resolve()
    if pid_file is None:
        pid_file = out_dir / "run" / "mosquitto.pid"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir.chmod(0o755)
        uid = _broker_uid(broker_user)
        paths = ca.paths
        if not paths.broker_key.exists():
            msg = f"no broker certificate in {paths.root}: run `fieldlink ca init`"
            raise BrokerConfigError(msg)
        _place(out_dir / FILE_NAMES["ca"], paths.ca_cert.read_bytes(), 0o644, None)
        _place(out_dir / FILE_NAMES["cert"], paths.broker_cert.read_bytes(), 0o644, None)
        _place(out_dir / FILE_NAMES["key"], paths.broker_key.read_bytes(), 0o600, uid)
        if not paths.crl.exists():
            ca.write_crl()
        _place(out_dir / FILE_NAMES["crl"], paths.crl.read_bytes(), 0o644, uid)
        acl = render_acl(_revoked_device_ids(ca))
        _place(out_dir / FILE_NAMES["acl"], acl.encode(), 0o644, uid)
        password = server_broker_password(ca)
        assert password is not None  # noqa: S101  (created when missing)
        _place(out_dir / FILE_NAMES["passwd"], render_password_file(password).encode(), 0o600, uid)
        if persistence:
            (out_dir / "data").mkdir(exist_ok=True)
            if uid is not None:
                os.chown(out_dir / "data", uid, -1)
        if pid_file.parent == out_dir / "run":
            # Mosquitto writes its pid file after dropping to the broker user.
            pid_file.parent.mkdir(mode=0o755, exist_ok=True)
            if uid is not None:
                os.chown(pid_file.parent, uid, -1)
        conf = render_mosquitto_conf(
            out_dir,
            port=port,
            bind_address=bind_address,
            persistence=persistence,
            pid_file=pid_file,
            server_port=server_port,
            server_bind_address=server_bind_address,
        )
        _place(out_dir / FILE_NAMES["conf"], conf.encode(), 0o644, None)
    except OSError as exc:
        msg = f"cannot write the broker configuration to {out_dir}: {exc.strerror or exc}"
        raise BrokerConfigError(msg) from exc
    targets = BrokerTargets.load(paths.broker_targets)
    if str(out_dir) not in targets.dirs:
        targets.dirs.append(str(out_dir))
    targets.pid_file = str(pid_file)
    if reload_command is not None:
        targets.reload_command = reload_command
    targets.reload_by = reload_by
    targets.save(paths.broker_targets)
    hand_back_to_owner(paths)  # run as root: the server must still read its targets
    logger.info(
        "wrote broker configuration to %s (devices on port %d, the server on %d)",
        out_dir,
        port,
        server_port,
    )
    return BrokerConfig(
        directory=out_dir,
        conf=out_dir / FILE_NAMES["conf"],
        acl=out_dir / FILE_NAMES["acl"],
        crl=out_dir / FILE_NAMES["crl"],
        port=port,
        pid_file=pid_file,
        server_port=server_port,
    )


def signal_broker(pid: int) -> None:
    """Make a running Mosquitto reload its CRL, ACL and certificates (SIGHUP).

    Raises:
        UnavailableError: when no such process exists or it may not be signalled.
    """
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        msg = f"the broker (pid {pid}) is not running"
        raise UnavailableError(msg) from exc
    except PermissionError as exc:
        msg = f"not allowed to signal the broker (pid {pid})"
        raise UnavailableError(msg) from exc


def _reload(targets: BrokerTargets, broker_pid: int | None) -> bool:
    if broker_pid is not None:
        signal_broker(broker_pid)
        return True
    # A configured command wins over the pid file (it may be `systemctl reload mosquitto`).
    if targets.reload_command:
        try:
            # A command the administrator configured, not user input.
            subprocess.run(  # noqa: S603
                shlex.split(targets.reload_command), check=True, capture_output=True, timeout=30
            )
        except subprocess.CalledProcessError as exc:
            said = (
                exc.stderr.decode(errors="replace").strip().splitlines()[-1:] if exc.stderr else []
            )
            msg = f"the broker reload command failed ({targets.reload_command}): "
            msg += f"exit {exc.returncode}"
            msg += f": {said[0]}" if said else ""
            raise UnavailableError(msg) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            msg = f"the broker reload command failed: {targets.reload_command}: {exc}"
            raise UnavailableError(msg) from exc
        return True
    if targets.pid_file:
        try:
            pid = int(Path(targets.pid_file).read_text().strip())
        except (OSError, ValueError) as exc:
            msg = f"cannot read the broker's pid from {targets.pid_file}"
            raise UnavailableError(msg) from exc
        signal_broker(pid)
        return True
    return False


def publish_revocations(ca: CertificateAuthority, *, broker_pid: int | None = None) -> bool:
    """Write the current CRL and ACL into every broker folder and make the broker reload.

    Call it after :meth:`CertificateAuthority.revoke_device` /
    :meth:`~CertificateAuthority.revoke_serials` and after
    :meth:`~CertificateAuthority.refresh_crl_if_due` rewrote the CRL.

    Args:
        ca: The device CA.
        broker_pid: The broker's pid, when this process started it (the embedded broker).

    Returns:
        Whether the broker was told to reload; ``False`` when no pid, pid file
        or reload command is configured (then restart or SIGHUP it yourself).

    Raises:
        UnavailableError: when the broker could not be signalled.
        BrokerConfigError: when a broker folder cannot be written.
    """
    targets = BrokerTargets.load(ca.paths.broker_targets)
    crl = ca.paths.crl.read_bytes()
    acl = render_acl(_revoked_device_ids(ca)).encode()
    for folder in targets.dirs:
        directory = Path(folder)
        try:
            # Keep the files' owner (the broker's user, when broker-config ran as root).
            uid = (directory / FILE_NAMES["crl"]).stat().st_uid if os.geteuid() == 0 else None
            _place(directory / FILE_NAMES["crl"], crl, 0o644, uid)
            _place(directory / FILE_NAMES["acl"], acl, 0o644, uid)
        except OSError as exc:
            msg = f"cannot update the broker's CRL in {directory}: {exc.strerror or exc}"
            raise BrokerConfigError(msg) from exc
    reloaded = _reload(targets, broker_pid)
    if not reloaded:
        logger.warning(
            "revocation written to %d broker folder(s) but no broker pid or reload command "
            "is configured: send the broker SIGHUP for it to take effect",
            len(targets.dirs),
        )
    return reloaded
