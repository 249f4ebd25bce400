"""``fieldlink agent enroll``: give this device its identity, with its private key made here.

The device makes its own ECDSA P-256 key (it never leaves the device), sends
a certificate signing request with the one-time token the administrator
handed over to ``POST /api/v1/enroll``, checks what comes back (the
certificate is for *this* key and signed by the CA that came with it), and
writes the identity into the agent's state directory::

    device.key                  the device's private key (0600)
    device.pem                  its certificate, CN = device id
    ca.pem                      the device CA (verifies the broker)
    command-signing.pub.pem     the server's command key, pinned from now on
    ssh_host_ed25519_key(.pub)  the host key of the agent's SSH server (0600)

and ``agent.toml`` (the ``[agent]`` settings naming all of the above) into the
configuration folder ``--dir``. With the default ``--dir /etc/fieldlink`` the
state directory is ``/var/lib/fieldlink-agent``, the unit's ``StateDirectory``:
renewal rewrites the key and certificate there, which ``ProtectSystem=strict``
forbids in ``/etc``. With another ``--dir`` the identity stays beside
``agent.toml`` unless ``--state-dir`` says otherwise.

Run as root, enrollment hands the state directory and every file in it to the
agent's service account (``--user``, by default ``fieldlink-agent`` when that
account exists): the key files are then readable by that account only, and
``agent.toml`` stays root's (the agent only reads it).

Plain ``http://`` is refused for a server that is not on this machine unless
``insecure_http`` is set: the answer carries the CA and the command key the
agent pins for good, and an on-path attacker could substitute both.

Nothing is written unless enrollment succeeds, so a failed attempt leaves a
working identity in place. ``cryptography`` is imported only here, when
enrolling.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import pwd
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from agent.identity.http import post_json
from shared.broker_url import BrokerAddress, BrokerUrlError
from shared.errors import FieldlinkError
from shared.ids import is_device_id
from shared.signing import load_public_key, write_file_atomic

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

logger = logging.getLogger(__name__)

DEFAULT_DIR: Final = Path("/etc/fieldlink")
DEFAULT_STATE_DIR: Final = Path("/var/lib/fieldlink-agent")
#: The service account of the shipped unit (systemd/fieldlink-agent.service).
DEFAULT_SERVICE_USER: Final = "fieldlink-agent"
ENROLL_PATH: Final = "/api/v1/enroll"
FILES: Final = {
    "key": "device.key",
    "cert": "device.pem",
    "ca": "ca.pem",
    "command_key": "command-signing.pub.pem",
    "ssh_host_key": "ssh_host_ed25519_key",
    "config": "agent.toml",
}
_RESPONSE_FIELDS: Final = (
    "device_id",
    "cert_pem",
    "ca_pem",
    "broker_url",
    "server_url",
    "command_public_key_pem",
)


class EnrollmentFailed(FieldlinkError):
    """The server refused the enrollment, or answered something this agent cannot trust."""


@dataclass(frozen=True)
class _DeviceKeys:
    tls_key: ec.EllipticCurvePrivateKey
    ssh_host_key: ed25519.Ed25519PrivateKey
    csr_pem: str
    ssh_public: str


def _make_keys() -> _DeviceKeys:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    tls_key = ec.generate_private_key(ec.SECP256R1())
    # The CA sets the real subject (CN = the device id the token belongs to).
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldlink-enrollment")]))
        .sign(tls_key, hashes.SHA256())
    )
    ssh_host_key = ed25519.Ed25519PrivateKey.generate()
    ssh_public = (
        ssh_host_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return _DeviceKeys(
        tls_key=tls_key,
        ssh_host_key=ssh_host_key,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
        ssh_public=ssh_public,
    )


def _enroll_url(server_url: str, *, insecure_http: bool = False) -> str:
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"--server must be an http(s):// URL, not {server_url!r}"
        raise EnrollmentFailed(msg)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if not insecure_http:
            msg = (
                f"refusing to enroll over plain http with {parts.hostname}: the CA and the "
                "command key pinned from its answer could be forged on the way; use https:// "
                "(or --insecure-http on a network you trust)"
            )
            raise EnrollmentFailed(msg)
        logger.warning("enrolling over plain http: the token crosses the network unencrypted")
    return server_url.rstrip("/") + ENROLL_PATH


@dataclass(frozen=True)
class ServiceAccount:
    """The account the agent's service runs as, owner of its identity files."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> ServiceAccount:
        """The account ``name`` from the password database.

        Raises:
            EnrollmentFailed: there is no such account.
        """
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            msg = f"--user {name}: no such account (create it: useradd --system {name})"
            raise EnrollmentFailed(msg) from None
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def resolve_service_account(name: str | None) -> ServiceAccount | None:
    """Whom the identity files should belong to.

    Args:
        name: ``--user``; ``None`` means ``fieldlink-agent`` when enrolling as
            root and that account exists, else the current user.

    Returns:
        The account, or ``None`` to leave the files to the current user.

    Raises:
        EnrollmentFailed: ``name`` does not exist, or is given by a non-root user
            (only root can give files away).
    """
    if name is None:
        if os.geteuid() != 0:
            return None
        try:
            return ServiceAccount.lookup(DEFAULT_SERVICE_USER)
        except EnrollmentFailed:
            return None
    account = ServiceAccount.lookup(name)
    if os.geteuid() not in (0, account.uid):
        msg = f"--user {name}: only root can enroll for another account"
        raise EnrollmentFailed(msg)
    return account


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def certificate_mismatch(
    cert: x509.Certificate, private_key: Any, device_id: str
) -> Literal["key", "name"] | None:
    """What makes ``cert`` not this device's certificate for ``private_key``, if anything.

    Returns:
        ``"key"`` when it certifies another public key, ``"name"`` when its CN is not
        ``device_id``, ``None`` when it is the device's.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return "key"
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != device_id:
        return "name"
    return None


def _check_answer(data: dict[str, Any], keys: _DeviceKeys) -> tuple[x509.Certificate, str]:
    """Check the server's answer; return the device certificate and the device id."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    missing = [name for name in _RESPONSE_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        msg = f"the server's enrollment answer lacks {', '.join(missing)}"
        raise EnrollmentFailed(msg)
    device_id = data["device_id"]
    if not is_device_id(device_id):
        msg = f"the server assigned an invalid device id {device_id!r}"
        raise EnrollmentFailed(msg)
    try:
        cert = x509.load_pem_x509_certificate(data["cert_pem"].encode())
        ca = x509.load_pem_x509_certificate(data["ca_pem"].encode())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        msg = "the server's certificate or CA is unreadable or does not match"
        raise EnrollmentFailed(msg) from exc
    except InvalidSignature as exc:
        msg = "the certificate is not signed by the CA the server sent"
        raise EnrollmentFailed(msg) from exc
    mismatch = certificate_mismatch(cert, keys.tls_key, device_id)
    if mismatch == "key":
        msg = "the server returned a certificate for another key"
        raise EnrollmentFailed(msg)
    if mismatch == "name":
        msg = "the certificate's name is not the device id the server assigned"
        raise EnrollmentFailed(msg)
    try:
        load_public_key(data["command_public_key_pem"])
    except FieldlinkError as exc:
        msg = f"the server's command key is unusable: {exc}"
        raise EnrollmentFailed(msg) from exc
    try:
        BrokerAddress.parse(data["broker_url"])
    except BrokerUrlError as exc:
        msg = f"the server's broker_url is unusable: it {exc}"
        raise EnrollmentFailed(msg) from None
    return cert, device_id


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_agent_toml(values: dict[str, str]) -> str:
    """The ``[agent]`` section written after enrollment."""
    lines = ["# Written by `fieldlink agent enroll`.", "[agent]"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _write_identity(
    directory: Path,
    state_dir: Path,
    identity_dir: Path,
    data: dict[str, Any],
    keys: _DeviceKeys,
    device_id: str,
    server_url: str,
    owner: ServiceAccount | None,
) -> Path:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    for folder in dict.fromkeys((state_dir, identity_dir)):
        if folder == directory:
            continue
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # an existing directory too: it holds private keys
        if owner is not None:
            os.chown(folder, owner.uid, owner.gid)
    paths = {name: identity_dir / file_name for name, file_name in FILES.items()}
    paths["config"] = directory / FILES["config"]
    no_encryption = serialization.NoEncryption()
    identity: list[tuple[Path, bytes, int]] = [
        (
            paths["key"],
            keys.tls_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_encryption
            ),
            0o600,
        ),
        (
            paths["ssh_host_key"],
            keys.ssh_host_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, no_encryption
            ),
            0o600,
        ),
        (
            identity_dir / (FILES["ssh_host_key"] + ".pub"),
            keys.ssh_public.encode() + b"\n",
            0o644,
        ),
        (paths["cert"], data["cert_pem"].encode(), 0o644),
        (paths["ca"], data["ca_pem"].encode(), 0o644),
        (paths["command_key"], data["command_public_key_pem"].encode(), 0o644),
    ]
    for path, content, mode in identity:
        write_file_atomic(path, content, mode=mode)
        if owner is not None:
            # After the atomic rename: the file is the agent's, the key unreadable to others.
            os.chown(path, owner.uid, owner.gid)
    config = render_agent_toml(
        {
            "device_id": device_id,
            "broker_url": data["broker_url"],
            "server_url": data["server_url"] or server_url,
            "ca_file": str(paths["ca"]),
            "cert_file": str(paths["cert"]),
            "key_file": str(paths["key"]),
            "command_key_file": str(paths["command_key"]),
            "state_dir": str(state_dir),
        }
    )
    # agent.toml stays the current user's (root's): the agent only reads it.
    write_file_atomic(paths["config"], config.encode(), mode=0o644)
    return paths["config"]


def identity_layout(directory: Path, state_dir: Path | None) -> tuple[Path, Path]:
    """Where the state and the identity files go for ``--dir`` and ``--state-dir``.

    Returns:
        ``(state_dir, identity_dir)``: ``/var/lib/fieldlink-agent`` twice for the
        default ``/etc/fieldlink``; ``DIR/state`` and ``DIR`` for another ``--dir``;
        ``STATE_DIR`` twice when ``--state-dir`` is given.
    """
    if state_dir is not None:
        return state_dir, state_dir
    if directory == DEFAULT_DIR:
        return DEFAULT_STATE_DIR, DEFAULT_STATE_DIR
    return directory / "state", directory


async def enroll(
    server_url: str,
    token: str,
    directory: Path,
    *,
    ca_file: Path | None = None,
    http_timeout_s: float = 30.0,
    state_dir: Path | None = None,
    user: str | None = None,
    insecure_http: bool = False,
) -> Path:
    """Enroll this device with the center and write its identity into ``directory``.

    Args:
        server_url: The center's URL, e.g. ``https://fieldlink.example.com``.
        token: The one-time enrollment token from ``fieldlink device add``.
        directory: Where to write ``agent.toml``.
        ca_file: A CA bundle to verify an https server with (default: the system's).
        http_timeout_s: Seconds to wait for the server's answer.
        state_dir: The agent's state directory, where the keys, certificates and
            renewable files go (default: see :func:`identity_layout`).
        user: The agent's service account, owner of the state directory and the
            identity files (default: see :func:`resolve_service_account`).
        insecure_http: Allow plain ``http://`` to a server that is not on this machine.

    Returns:
        The path of the written ``agent.toml``.

    Raises:
        EnrollmentFailed: the server refused (its ``detail`` in one line) or
            answered something inconsistent.
        UnavailableError: the server cannot be reached.
    """
    url = _enroll_url(server_url, insecure_http=insecure_http)
    owner = resolve_service_account(user)
    state, identity_dir = identity_layout(directory, state_dir)
    keys = await asyncio.to_thread(_make_keys)
    body = {"token": token, "csr_pem": keys.csr_pem, "ssh_host_key": keys.ssh_public}
    data = await asyncio.to_thread(
        partial(
            post_json,
            url,
            body,
            ca_file=ca_file,
            timeout_s=http_timeout_s,
            action="enrollment",
            failure=EnrollmentFailed,
        )
    )
    _, device_id = _check_answer(data, keys)
    try:
        config_path = await asyncio.to_thread(
            _write_identity,
            directory,
            state,
            identity_dir,
            data,
            keys,
            device_id,
            server_url,
            owner,
        )
    except OSError as exc:
        msg = f"cannot write the device identity to {directory}: {exc.strerror or exc}"
        raise EnrollmentFailed(msg) from exc
    logger.info(
        "enrolled as %s; configuration in %s, identity in %s%s",
        device_id,
        config_path,
        identity_dir,
        f" (owned by {owner.name})" if owner is not None else "",
    )
    return config_path
