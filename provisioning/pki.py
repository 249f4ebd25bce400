"""The CA's files under ``state_dir/pki``: where each lives, what it holds, the lock.

What needs no CA key lives here: the broker's reload helper reads the revoked
devices and the server reads certificate dates without opening the CA
(:mod:`provisioning.ca`).

Layout of ``state_dir/pki`` (secrets 0600, written atomically through a
0600 temporary file; the folder itself 0700)::

    ca.key  ca.pem                      the device CA
    crl.pem                             its revocation list (PEM)
    command-signing.key                 Ed25519 key that signs commands (separate from the CA)
    command-signing.pub.pem             what agents pin at enrollment
    broker.key  broker.pem              the MQTT broker's TLS server certificate
    server-client.key  server-client.pem  the server's MQTT identity (CN fieldlink_server)
    issued/<device_id>.<serial>.pem     every certificate issued to a device
    revoked.json                        revoked serials and the CRL number
    broker-targets.json                 where ``broker-config`` copied the CRL, how to reload it
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from shared.errors import AuthError, Conflict, FieldlinkError, NotFound
from shared.ids import is_device_id, isoformat_z
from shared.signing import write_file_atomic

#: CN of the server's MQTT client certificate. The underscore makes it an
#: impossible device id, so no device certificate can ever carry it.
SERVER_CLIENT_CN: Final = "fieldlink_server"
#: CN of the broker's TLS server certificate (also not a device id).
BROKER_CN: Final = "fieldlink broker"

#: Names the broker certificate always carries, for local connections.
DEFAULT_BROKER_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")


class CaError(FieldlinkError):
    """The CA is missing, damaged, or asked to do something it must not."""


class CaNotInitialized(CaError):
    """No CA under this state_dir yet: run ``fieldlink ca init``."""

    exit_code = 2


class CaExists(CaError, Conflict):
    """A CA already exists there and ``--force`` was not given."""


class BadCsr(CaError):
    """A certificate signing request is unreadable, badly signed, or uses a refused key."""


class RenewalRefused(CaError, AuthError):
    """The certificate presented for renewal is not a valid, current certificate of this CA."""


class UnknownCertificate(CaError, NotFound):
    """No certificate with that serial (or for that device) was issued by this CA."""


@dataclass(frozen=True)
class PkiPaths:
    """Where each file of the CA lives under ``state_dir/pki``."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path) -> PkiPaths:
        """The paths for a server whose ``state_dir`` is given."""
        return cls(state_dir / "pki")

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def command_key(self) -> Path:
        return self.root / "command-signing.key"

    @property
    def command_public_key(self) -> Path:
        return self.root / "command-signing.pub.pem"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def server_client_key(self) -> Path:
        return self.root / "server-client.key"

    @property
    def server_client_cert(self) -> Path:
        return self.root / "server-client.pem"

    @property
    def issued(self) -> Path:
        return self.root / "issued"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked.json"

    @property
    def broker_targets(self) -> Path:
        return self.root / "broker-targets.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate this CA issued (to a device, the broker, or the server)."""

    common_name: str
    serial: int
    cert_pem: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str

    @property
    def serial_hex(self) -> str:
        """The serial as lowercase hex: how it is stored and shown."""
        return format(self.serial, "x")

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> IssuedCertificate:
        """Describe a loaded certificate."""
        return cls(
            common_name=common_name(cert),
            serial=cert.serial_number,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        )


@dataclass(frozen=True)
class RevokedEntry:
    """A revoked serial."""

    serial: int
    revoked_at: datetime
    device_id: str | None
    reason: str


def common_name(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The subject's first CN, or ``""``."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


def parse_serial(text: str | int) -> int:
    """A serial from an int, or hex text as shown by ``openssl`` (``0x``, colons allowed).

    Raises:
        UnknownCertificate: when the text is not a serial.
    """
    if isinstance(text, int):
        return text
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(cleaned, 16)
    except ValueError:
        msg = f"not a certificate serial: {text!r} (expected hex)"
        raise UnknownCertificate(msg) from None


def certificate_not_after(path: Path) -> datetime | None:
    """When the PEM certificate in ``path`` expires (``None``: missing or unreadable)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def read_revoked_device_ids(paths: PkiPaths) -> list[str]:
    """The devices with a revoked certificate, from ``revoked.json`` (no CA key needed).

    The broker's reload helper uses it: it runs with the rights to write the
    broker's files, and must not need the CA's private key for that.
    """
    try:
        data = json.loads(paths.revoked.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        msg = f"{paths.revoked} is damaged: {exc}"
        raise CaError(msg) from exc
    found = {item.get("device_id") for item in data.get("revoked", {}).values()}
    # Only real device ids: each becomes a line of the broker's ACL.
    return sorted(d for d in found if isinstance(d, str) and is_device_id(d))


def hand_back_to_owner(paths: PkiPaths) -> None:
    """Give files root wrote under ``pki/`` to the folder's owner (the server's user).

    An administrator runs ``fieldlink device revoke`` or ``broker-config`` as root;
    without this, the server (user ``fieldlink``) could no longer read the
    revocation list or the broker targets they rewrote. Links are not followed.
    """
    if os.geteuid() != 0 or not paths.root.exists():
        return
    owner = paths.root.stat()
    if owner.st_uid == 0:
        return
    folders = [paths.root, *([paths.issued] if paths.issued.is_dir() else [])]
    for folder in folders:
        for path in folder.iterdir():
            info = path.lstat()
            if info.st_uid == 0:
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def read_revocations(paths: PkiPaths) -> tuple[int, dict[int, RevokedEntry]]:
    """The CRL number and the revoked serials, from ``revoked.json`` (none yet: ``0, {}``).

    Raises:
        CaError: when the file is damaged.
    """
    try:
        data = json.loads(paths.revoked.read_text())
    except FileNotFoundError:
        return 0, {}
    except (OSError, ValueError) as exc:
        msg = f"{paths.revoked} is damaged: {exc}"
        raise CaError(msg) from exc
    entries = {
        int(serial, 16): RevokedEntry(
            serial=int(serial, 16),
            revoked_at=datetime.fromisoformat(item["revoked_at"]),
            device_id=item.get("device_id"),
            reason=item.get("reason", "unspecified"),
        )
        for serial, item in data.get("revoked", {}).items()
    }
    return int(data.get("crl_number", 0)), entries


def write_revocations(paths: PkiPaths, crl_number: int, entries: Iterable[RevokedEntry]) -> None:
    """Write ``revoked.json`` (0600): the CRL number and every revoked serial."""
    record = {
        "crl_number": crl_number,
        "revoked": {
            format(entry.serial, "x"): {
                "revoked_at": isoformat_z(entry.revoked_at),
                "device_id": entry.device_id,
                "reason": entry.reason,
            }
            for entry in entries
        },
    }
    write_file_atomic(paths.revoked, json.dumps(record, indent=1).encode(), mode=0o600)


def broker_extra_hostnames(paths: PkiPaths) -> list[str]:
    """The names the broker certificate carries besides :data:`DEFAULT_BROKER_HOSTNAMES`."""
    try:
        cert = x509.load_pem_x509_certificate(paths.broker_cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    found = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    found += names.get_values_for_type(x509.DNSName)
    return [name for name in found if name not in DEFAULT_BROKER_HOSTNAMES]


@contextlib.contextmanager
def locked(paths: PkiPaths) -> Iterator[None]:
    """Serialise changes to the CA between processes (server, CLI)."""
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
        hand_back_to_owner(paths)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
