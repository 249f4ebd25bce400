"""The device certificate authority: keys, certificates, revocation, all under ``state_dir/pki``.

Why ECDSA P-256 by default: it is the one elliptic curve every TLS stack of
the last decade implements (OpenSSL since 1.0.1, mbedTLS, wolfSSL, BearSSL,
SChannel, Java 7+, the embedded stacks of MFP and console firmware from about
2014 on), its keys and signatures are small (a cheap handshake on a slow MFP
CPU), and it is what current guidance (CA/B Forum, NIST SP 800-52r2) names
first. Ed25519 certificates would be nicer still but many TLS 1.2 stacks
(mbedTLS, older OpenSSL, most firmware) cannot verify them. Very old devices
whose stacks know only RSA (TLS 1.0-era firmware) can be served by a CA made
with ``key_type="rsa-2048"``: the CA, the broker certificate and the server's
MQTT certificate then use RSA-2048, which every stack accepts. Devices choose
their own key in their CSR: P-256, P-384, RSA 2048-4096 and Ed25519 are
accepted; weaker keys are refused.

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

import base64
import binascii
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import AuthError, Conflict, FieldlinkError, NotFound
from shared.ids import check_device_id, is_device_id, isoformat_z, utcnow
from shared.signing import (
    generate_command_key,
    public_key_pem,
    read_private_key,
    write_file_atomic,
)

logger = logging.getLogger(__name__)

KeyType = Literal["ec-p256", "rsa-2048"]
KEY_TYPES: Final[tuple[KeyType, ...]] = ("ec-p256", "rsa-2048")
#: CN of the server's MQTT client certificate. The underscore makes it an
#: impossible device id, so no device certificate can ever carry it.
SERVER_CLIENT_CN: Final = "fieldlink_server"
#: CN of the broker's TLS server certificate (also not a device id).
BROKER_CN: Final = "fieldlink broker"

CA_VALIDITY: Final = timedelta(days=3650)
DEVICE_VALIDITY: Final = timedelta(days=397)
SERVICE_VALIDITY: Final = timedelta(days=825)
#: How long a CRL stays valid. OpenSSL refuses every client once the broker's
#: CRL is past its next update, so it is long, and refreshed on every change
#: and by :meth:`CertificateAuthority.refresh_crl_if_due`.
CRL_VALIDITY: Final = timedelta(days=365)
CRL_REFRESH_AFTER: Final = timedelta(days=30)
#: The broker's and the server's own certificates are renewed this long before they expire
#: (the server checks hourly; a month of slack covers a server that was down for weeks).
SERVICE_RENEW_BEFORE: Final = timedelta(days=60)
# Certificates start a little in the past: a device clock slightly behind still accepts them.
_BACKDATE: Final = timedelta(minutes=5)

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CsrPublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


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


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_type_of(key: PrivateKey) -> KeyType:
    return "rsa-2048" if isinstance(key, rsa.RSAPrivateKey) else "ec-p256"


def _check_csr_key(key: object) -> CsrPublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            msg = f"EC curve {key.curve.name} is not accepted: use P-256 or P-384"
            raise BadCsr(msg)
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 4096:
            msg = f"RSA key of {key.key_size} bits is not accepted: use 2048 to 4096 bits"
            raise BadCsr(msg)
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    msg = f"{type(key).__name__} keys are not accepted: use EC P-256, RSA 2048+ or Ed25519"
    raise BadCsr(msg)


def load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    """Load a PEM CSR and check its self-signature (proof that the requester holds the key).

    Raises:
        BadCsr: when it is not a PEM CSR, its signature is wrong, or its key is refused.
    """
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        msg = "csr_pem is not a PEM certificate signing request"
        raise BadCsr(msg) from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        msg = "the certificate signing request cannot be checked"
        raise BadCsr(msg) from exc
    if not valid:
        msg = "the certificate signing request's signature is invalid"
        raise BadCsr(msg)
    _check_csr_key(csr.public_key())
    return csr


def _alt_names(hostnames: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hostnames:
        host = host.strip().lower()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


#: Names the broker certificate always carries, for local connections.
DEFAULT_BROKER_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")


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


@contextlib.contextmanager
def _locked(paths: PkiPaths) -> Iterator[None]:
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


class CertificateAuthority:
    """The device CA of one server, backed by the files under ``state_dir/pki``.

    Create it with :meth:`init` (``fieldlink ca init``), open it with :meth:`load`.
    """

    def __init__(self, paths: PkiPaths, cert: x509.Certificate, key: PrivateKey) -> None:
        self.paths = paths
        self.cert = cert
        self._key = key

    # --- creation and loading -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        state_dir: Path,
        *,
        key_type: KeyType = "ec-p256",
        hostnames: Iterable[str] = (),
        force: bool = False,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Create the CA, the command-signing key, the broker and server certificates.

        Args:
            state_dir: The server's ``state_dir``; everything goes into ``state_dir/pki``.
            key_type: ``ec-p256`` (default) or ``rsa-2048`` for fleets with RSA-only stacks.
            hostnames: Extra names (DNS or IP) devices use to reach the broker.
            force: Replace an existing CA. Every device certificate it issued stops working.
            now: The current time (tests).

        Raises:
            CaExists: when a CA exists and ``force`` is false.
        """
        if key_type not in KEY_TYPES:
            msg = f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}"
            raise CaError(msg)
        paths = PkiPaths.under(state_dir)
        now = now or utcnow()
        with _locked(paths):
            os.chmod(paths.root, 0o700)
            if paths.ca_key.exists() and not force:
                msg = f"a CA already exists in {paths.root} (use --force to replace it)"
                raise CaExists(msg)
            key = _new_key(key_type)
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldlink"),
                    x509.NameAttribute(
                        NameOID.COMMON_NAME, f"fieldlink device CA {secrets.token_hex(4)}"
                    ),
                ]
            )
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(now + CA_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            for stale in paths.issued.glob("*.pem") if paths.issued.exists() else ():
                stale.unlink()
            paths.revoked.unlink(missing_ok=True)
            write_file_atomic(paths.ca_key, _key_pem(key), mode=0o600)
            write_file_atomic(paths.ca_cert, _cert_pem(cert), mode=0o644)
            command_key = generate_command_key()
            write_file_atomic(
                paths.command_key,
                command_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                mode=0o600,
            )
            write_file_atomic(paths.command_public_key, public_key_pem(command_key), mode=0o644)
            ca = cls(paths, cert, key)
            ca._issue_broker_certificate_locked(hostnames, now)
            ca._issue_server_client_certificate_locked(now)
            ca._write_crl_locked(now)
        logger.info("created %s CA %s in %s", key_type, common_name(cert), paths.root)
        return ca

    @classmethod
    def load(cls, state_dir: Path) -> CertificateAuthority:
        """Open the CA under ``state_dir/pki``.

        Raises:
            CaNotInitialized: when there is none.
            CaError: when its files are damaged.
        """
        paths = PkiPaths.under(state_dir)
        if not paths.ca_key.exists():
            msg = f"no CA in {paths.root}: run `fieldlink ca init` first"
            raise CaNotInitialized(msg)
        try:
            key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        except (OSError, ValueError) as exc:
            msg = f"the CA in {paths.root} cannot be read: {exc}"
            raise CaError(msg) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            msg = f"{paths.ca_key} is not an EC or RSA key"
            raise CaError(msg)
        return cls(paths, cert, key)

    # --- what others read -----------------------------------------------------------------

    @property
    def key_type(self) -> KeyType:
        """``ec-p256`` or ``rsa-2048``."""
        return _key_type_of(self._key)

    @property
    def ca_pem(self) -> str:
        """The CA certificate (PEM), which devices and the broker trust."""
        return _cert_pem(self.cert).decode()

    @property
    def command_public_key_pem(self) -> str:
        """The command-signing public key (PEM), which agents pin at enrollment."""
        return self.paths.command_public_key.read_text()

    def command_signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The Ed25519 key the server signs commands with (:func:`shared.signing.sign_command`)."""
        return read_private_key(self.paths.command_key)

    # --- issuing --------------------------------------------------------------------------

    def _sign(
        self,
        public_key: CsrPublicKey,
        cn: str,
        validity: timedelta,
        now: datetime,
        *,
        server: bool = False,
        hostnames: Iterable[str] = (),
    ) -> x509.Certificate:
        digital_only = not isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldlink"),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=not digital_only,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        alt_names = _alt_names(hostnames)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def _record(self, cert: x509.Certificate) -> IssuedCertificate:
        issued = IssuedCertificate.from_certificate(cert)
        if is_device_id(issued.common_name):
            self.paths.issued.mkdir(mode=0o700, exist_ok=True)
            write_file_atomic(
                self.paths.issued / f"{issued.common_name}.{issued.serial_hex}.pem",
                issued.cert_pem.encode(),
                mode=0o644,
            )
        return issued

    def sign_device_csr(
        self,
        csr_pem: str | bytes,
        device_id: str,
        *,
        validity: timedelta = DEVICE_VALIDITY,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """Issue a device certificate for the key in a CSR made on the device.

        Only the CSR's public key is used: the subject is always ``CN=<device_id>``
        (whatever CN the CSR asks for: devices do not know their id before
        enrolling, and a device must never choose its own identity) and the
        extensions are the CA's own (client authentication only).

        Args:
            csr_pem: The PEM CSR; its self-signature proves the device holds the key.
            device_id: The id the server registered; it becomes the CN and MQTT username.
            validity: How long the certificate is valid (capped by the CA's own validity).
            now: The current time (tests).

        Raises:
            BadCsr: unreadable, badly signed, or a refused key (e.g. RSA-1024).
            InvalidDeviceId: when ``device_id`` is not a valid device id.
        """
        check_device_id(device_id)
        if validity <= timedelta(0) or validity > CA_VALIDITY:
            msg = "device certificate validity must be positive and at most 10 years"
            raise CaError(msg)
        csr = load_csr(csr_pem)
        public_key = _check_csr_key(csr.public_key())
        now = now or utcnow()
        with _locked(self.paths):
            cert = self._sign(public_key, device_id, validity, now)
            issued = self._record(cert)
        logger.info(
            "issued certificate %s to device %s until %s",
            issued.serial_hex,
            device_id,
            isoformat_z(issued.not_after),
        )
        return issued

    def verify_issued(self, cert_pem: str | bytes, now: datetime | None = None) -> x509.Certificate:
        """Check that a certificate is this CA's, current, and not revoked.

        Raises:
            RenewalRefused: naming what is wrong with it.
        """
        raw = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        try:
            cert = x509.load_pem_x509_certificate(raw)
        except ValueError as exc:
            msg = "not a PEM certificate"
            raise RenewalRefused(msg) from exc
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            msg = "the certificate was not issued by this CA"
            raise RenewalRefused(msg) from exc
        now = now or utcnow()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            msg = "the certificate is expired or not yet valid"
            raise RenewalRefused(msg)
        if cert.serial_number in self.revoked_serials():
            msg = "the certificate is revoked"
            raise RenewalRefused(msg)
        return cert

    def renew_device_certificate(
        self,
        current_cert_pem: str | bytes,
        csr_pem: str | bytes,
        proof: str,
        *,
        validity: timedelta = DEVICE_VALIDITY,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """Issue a new certificate to a device that proves it holds its current one.

        The device sends its current certificate, a CSR for its new key (or the
        same key), and ``proof``: base64url of its *current* key's signature
        over the CSR's DER bytes (ECDSA with SHA-256, RSA PKCS#1 v1.5 with
        SHA-256, or Ed25519). The certificate alone is public; the proof shows
        the requester holds its key. The new certificate has the same CN.

        Raises:
            RenewalRefused: the current certificate is foreign, expired, revoked,
                not a device's, or the proof does not verify.
            BadCsr: the CSR is unreadable or uses a refused key.
        """
        now = now or utcnow()
        current = self.verify_issued(current_cert_pem, now)
        device_id = common_name(current)
        if not is_device_id(device_id):
            msg = "only device certificates can be renewed this way"
            raise RenewalRefused(msg)
        csr = load_csr(csr_pem)
        try:
            signature = base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4))
        except (binascii.Error, ValueError) as exc:
            msg = "the renewal proof is not base64url"
            raise RenewalRefused(msg) from exc
        if not _proof_is_valid(
            current.public_key(), signature, csr.public_bytes(serialization.Encoding.DER)
        ):
            msg = "the renewal proof does not verify with the current certificate's key"
            raise RenewalRefused(msg)
        return self.sign_device_csr(csr_pem, device_id, validity=validity, now=now)

    def _issue_broker_certificate_locked(
        self, hostnames: Iterable[str], now: datetime
    ) -> IssuedCertificate:
        key = _new_key(self.key_type)
        names = [*DEFAULT_BROKER_HOSTNAMES, *hostnames]
        cert = self._sign(
            key.public_key(),
            "fieldlink broker",
            SERVICE_VALIDITY,
            now,
            server=True,
            hostnames=names,
        )
        write_file_atomic(self.paths.broker_key, _key_pem(key), mode=0o600)
        write_file_atomic(self.paths.broker_cert, _cert_pem(cert), mode=0o644)
        return IssuedCertificate.from_certificate(cert)

    def issue_broker_certificate(
        self, hostnames: Iterable[str] = (), now: datetime | None = None
    ) -> IssuedCertificate:
        """(Re)issue the broker's TLS server certificate with a new key.

        It always names ``localhost``, ``127.0.0.1`` and ``::1``, plus ``hostnames``.
        """
        with _locked(self.paths):
            return self._issue_broker_certificate_locked(hostnames, now or utcnow())

    def _issue_server_client_certificate_locked(self, now: datetime) -> IssuedCertificate:
        key = _new_key(self.key_type)
        cert = self._sign(key.public_key(), SERVER_CLIENT_CN, SERVICE_VALIDITY, now)
        write_file_atomic(self.paths.server_client_key, _key_pem(key), mode=0o600)
        write_file_atomic(self.paths.server_client_cert, _cert_pem(cert), mode=0o644)
        return IssuedCertificate.from_certificate(cert)

    def issue_server_client_certificate(self, now: datetime | None = None) -> IssuedCertificate:
        """(Re)issue the server's MQTT client certificate (CN ``fieldlink_server``)."""
        with _locked(self.paths):
            return self._issue_server_client_certificate_locked(now or utcnow())

    def issue_client_certificate_for_key(
        self,
        public_key: CsrPublicKey,
        cn: str,
        *,
        validity: timedelta = DEVICE_VALIDITY,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """Sign a client certificate for a key held here (simulated devices, tests).

        ``cn`` must be a device id; use :meth:`issue_server_client_certificate` for the server.
        """
        check_device_id(cn)
        with _locked(self.paths):
            return self._record(self._sign(public_key, cn, validity, now or utcnow()))

    # --- listing --------------------------------------------------------------------------

    def issued_certificates(self, device_id: str | None = None) -> list[IssuedCertificate]:
        """Certificates issued to devices (to one device when ``device_id`` is given)."""
        if not self.paths.issued.exists():
            return []
        pattern = f"{device_id}.*.pem" if device_id else "*.pem"
        found = []
        for path in sorted(self.paths.issued.glob(pattern)):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            found.append(IssuedCertificate.from_certificate(cert))
        return sorted(found, key=lambda issued: issued.not_before)

    # --- revocation -----------------------------------------------------------------------

    def _read_revoked(self) -> tuple[int, dict[int, RevokedEntry]]:
        try:
            data = json.loads(self.paths.revoked.read_text())
        except FileNotFoundError:
            return 0, {}
        except (OSError, ValueError) as exc:
            msg = f"{self.paths.revoked} is damaged: {exc}"
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

    def revoked(self) -> list[RevokedEntry]:
        """Every revoked serial, oldest revocation first."""
        return sorted(self._read_revoked()[1].values(), key=lambda entry: entry.revoked_at)

    def revoked_serials(self) -> set[int]:
        """The serials on the CRL."""
        return set(self._read_revoked()[1])

    def _write_crl_locked(
        self, now: datetime, add: Iterable[RevokedEntry] = ()
    ) -> tuple[bytes, list[int]]:
        crl_number, entries = self._read_revoked()
        added = [entry.serial for entry in add if entry.serial not in entries]
        for entry in add:
            entries.setdefault(entry.serial, entry)
        crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(crl_number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for entry in entries.values():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
                .build()
            )
        crl_pem = builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        record = {
            "crl_number": crl_number,
            "revoked": {
                format(entry.serial, "x"): {
                    "revoked_at": isoformat_z(entry.revoked_at),
                    "device_id": entry.device_id,
                    "reason": entry.reason,
                }
                for entry in entries.values()
            },
        }
        write_file_atomic(self.paths.revoked, json.dumps(record, indent=1).encode(), mode=0o600)
        write_file_atomic(self.paths.crl, crl_pem, mode=0o644)
        return crl_pem, added

    def write_crl(self, now: datetime | None = None) -> bytes:
        """Write a fresh CRL (``pki/crl.pem``) and return it (PEM)."""
        with _locked(self.paths):
            return self._write_crl_locked(now or utcnow())[0]

    def crl_next_update(self) -> datetime | None:
        """When the current CRL expires, or ``None`` when there is none."""
        try:
            crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
        except (OSError, ValueError):
            return None
        return crl.next_update_utc

    def refresh_crl_if_due(self, now: datetime | None = None) -> bool:
        """Rewrite the CRL when it is older than 30 days (call daily); tell whether it did.

        The broker refuses every client once its CRL expires, so the server
        should call this (and :func:`provisioning.broker.publish_crl`) periodically.
        """
        now = now or utcnow()
        next_update = self.crl_next_update()
        if next_update is not None and next_update - now > CRL_VALIDITY - CRL_REFRESH_AFTER:
            return False
        self.write_crl(now)
        return True

    def _broker_extra_hostnames(self) -> list[str]:
        try:
            cert = x509.load_pem_x509_certificate(self.paths.broker_cert.read_bytes())
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, x509.ExtensionNotFound):
            return []
        found = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
        found += names.get_values_for_type(x509.DNSName)
        return [name for name in found if name not in DEFAULT_BROKER_HOSTNAMES]

    def renew_service_certificates_if_due(
        self, now: datetime | None = None, *, renew_before: timedelta = SERVICE_RENEW_BEFORE
    ) -> list[str]:
        """Reissue the broker's and server's MQTT certificates expiring within ``renew_before``.

        The broker's keeps its host names. Each gets a new key.

        Returns:
            What was renewed: ``"broker"``, ``"server"`` (empty when nothing was due).
        """
        now = now or utcnow()
        renewed = []
        with _locked(self.paths):
            broker_until = certificate_not_after(self.paths.broker_cert)
            if broker_until is not None and broker_until - now < renew_before:
                issued = self._issue_broker_certificate_locked(self._broker_extra_hostnames(), now)
                logger.info(
                    "renewed the broker certificate until %s", isoformat_z(issued.not_after)
                )
                renewed.append("broker")
            server_until = certificate_not_after(self.paths.server_client_cert)
            if server_until is not None and server_until - now < renew_before:
                issued = self._issue_server_client_certificate_locked(now)
                logger.info(
                    "renewed the server's MQTT certificate until %s", isoformat_z(issued.not_after)
                )
                renewed.append("server")
        return renewed

    def devices_expiring(self, within: timedelta, now: datetime | None = None) -> int:
        """Unrevoked devices with no certificate valid beyond ``now + within`` (expired too)."""
        now = now or utcnow()
        revoked = self.revoked_serials()
        latest: dict[str, datetime] = {}
        revoked_devices: set[str] = set()
        for item in self.issued_certificates():
            if item.serial in revoked:
                revoked_devices.add(item.common_name)
                continue
            latest[item.common_name] = max(
                item.not_after, latest.get(item.common_name, item.not_after)
            )
        return sum(
            1
            for device_id, not_after in latest.items()
            if device_id not in revoked_devices and not_after < now + within
        )

    def revoke_serials(
        self,
        serials: Iterable[int | str],
        *,
        reason: str = "unspecified",
        now: datetime | None = None,
    ) -> list[int]:
        """Put certificates on the CRL by serial and rewrite it.

        Serials not issued by this CA to a device are accepted too (e.g. the
        broker's or server's own), as long as they are numbers.

        Returns:
            The serials newly revoked (already revoked ones are left as they are).
        """
        now = now or utcnow()
        wanted = [parse_serial(serial) for serial in serials]
        owners = {issued.serial: issued.common_name for issued in self.issued_certificates()}
        entries = [
            RevokedEntry(serial=serial, revoked_at=now, device_id=owners.get(serial), reason=reason)
            for serial in wanted
        ]
        with _locked(self.paths):
            _, added = self._write_crl_locked(now, entries)
        for serial in added:
            logger.info("revoked certificate %x (%s)", serial, owners.get(serial, "not a device"))
        return added

    def revoke_device(
        self, device_id: str, *, reason: str = "unspecified", now: datetime | None = None
    ) -> list[int]:
        """Revoke every certificate ever issued to a device.

        Returns:
            The serials newly revoked.

        Raises:
            UnknownCertificate: when this CA never issued a certificate to it.
        """
        check_device_id(device_id)
        issued = self.issued_certificates(device_id)
        if not issued:
            msg = f"no certificate was issued to device {device_id}"
            raise UnknownCertificate(msg)
        return self.revoke_serials([item.serial for item in issued], reason=reason, now=now)


def _proof_is_valid(public_key: object, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
