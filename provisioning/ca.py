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

The CA's files and what needs no CA key are in :mod:`provisioning.pki`; the
X.509 objects it builds and checks in :mod:`provisioning.certificates`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from provisioning.certificates import (
    KEY_TYPES,
    CsrPublicKey,
    KeyType,
    build_ca_certificate,
    cert_pem,
    check_csr_key,
    check_renewal_proof,
    key_pem,
    key_type_of,
    load_csr,
    new_key,
    sign_leaf,
)
from provisioning.pki import (
    BROKER_CN,
    DEFAULT_BROKER_HOSTNAMES,
    CaError,
    CaExists,
    CaNotInitialized,
    IssuedCertificate,
    PkiPaths,
    RenewalRefused,
    broker_extra_hostnames,
    certificate_not_after,
    common_name,
    locked,
)

# provisioning/broker.py imports these two from here.
from provisioning.pki import SERVER_CLIENT_CN as SERVER_CLIENT_CN
from provisioning.pki import hand_back_to_owner as hand_back_to_owner
from provisioning.register import CertificateRegister
from shared.ids import check_device_id, is_device_id, isoformat_z, utcnow
from shared.signing import (
    generate_command_key,
    private_key_pem,
    public_key_pem,
    read_private_key,
    write_file_atomic,
)

logger = logging.getLogger(__name__)

CA_VALIDITY: Final = timedelta(days=3650)
DEVICE_VALIDITY: Final = timedelta(days=397)
SERVICE_VALIDITY: Final = timedelta(days=825)
#: The broker's and the server's own certificates are renewed this long before they expire
#: (the server checks hourly; a month of slack covers a server that was down for weeks).
SERVICE_RENEW_BEFORE: Final = timedelta(days=60)


class CertificateAuthority(CertificateRegister):
    """The device CA of one server, backed by the files under ``state_dir/pki``.

    Create it with :meth:`init` (``fieldlink ca init``), open it with :meth:`load`.
    What it issued and revoked, and its CRL, are the :class:`CertificateRegister`'s.
    """

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
        with locked(paths):
            os.chmod(paths.root, 0o700)
            if paths.ca_key.exists() and not force:
                msg = f"a CA already exists in {paths.root} (use --force to replace it)"
                raise CaExists(msg)
            key = new_key(key_type)
            cert = build_ca_certificate(key, now, CA_VALIDITY)
            for stale in paths.issued.glob("*.pem") if paths.issued.exists() else ():
                stale.unlink()
            paths.revoked.unlink(missing_ok=True)
            write_file_atomic(paths.ca_key, key_pem(key), mode=0o600)
            write_file_atomic(paths.ca_cert, cert_pem(cert), mode=0o644)
            command_key = generate_command_key()
            write_file_atomic(paths.command_key, private_key_pem(command_key), mode=0o600)
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
        return key_type_of(self._key)

    @property
    def ca_pem(self) -> str:
        """The CA certificate (PEM), which devices and the broker trust."""
        return cert_pem(self.cert).decode()

    @property
    def command_public_key_pem(self) -> str:
        """The command-signing public key (PEM), which agents pin at enrollment."""
        return self.paths.command_public_key.read_text()

    def command_signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The Ed25519 key the server signs commands with (:func:`shared.signing.sign_command`)."""
        return read_private_key(self.paths.command_key)

    # --- issuing --------------------------------------------------------------------------

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
        public_key = check_csr_key(csr.public_key())
        now = now or utcnow()
        with locked(self.paths):
            cert = sign_leaf(self.cert, self._key, public_key, device_id, validity, now)
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
        check_renewal_proof(current, csr, proof)
        return self.sign_device_csr(csr_pem, device_id, validity=validity, now=now)

    def _issue_broker_certificate_locked(
        self, hostnames: Iterable[str], now: datetime
    ) -> IssuedCertificate:
        key = new_key(self.key_type)
        names = [*DEFAULT_BROKER_HOSTNAMES, *hostnames]
        cert = sign_leaf(
            self.cert,
            self._key,
            key.public_key(),
            BROKER_CN,
            SERVICE_VALIDITY,
            now,
            server=True,
            hostnames=names,
        )
        write_file_atomic(self.paths.broker_key, key_pem(key), mode=0o600)
        write_file_atomic(self.paths.broker_cert, cert_pem(cert), mode=0o644)
        return IssuedCertificate.from_certificate(cert)

    def issue_broker_certificate(
        self, hostnames: Iterable[str] = (), now: datetime | None = None
    ) -> IssuedCertificate:
        """(Re)issue the broker's TLS server certificate with a new key.

        It always names ``localhost``, ``127.0.0.1`` and ``::1``, plus ``hostnames``.
        """
        with locked(self.paths):
            return self._issue_broker_certificate_locked(hostnames, now or utcnow())

    def _issue_server_client_certificate_locked(self, now: datetime) -> IssuedCertificate:
        key = new_key(self.key_type)
        cert = sign_leaf(
            self.cert, self._key, key.public_key(), SERVER_CLIENT_CN, SERVICE_VALIDITY, now
        )
        write_file_atomic(self.paths.server_client_key, key_pem(key), mode=0o600)
        write_file_atomic(self.paths.server_client_cert, cert_pem(cert), mode=0o644)
        return IssuedCertificate.from_certificate(cert)

    def issue_server_client_certificate(self, now: datetime | None = None) -> IssuedCertificate:
        """(Re)issue the server's MQTT client certificate (CN ``fieldlink_server``)."""
        with locked(self.paths):
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
        with locked(self.paths):
            return self._record(
                sign_leaf(self.cert, self._key, public_key, cn, validity, now or utcnow())
            )

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
        with locked(self.paths):
            broker_until = certificate_not_after(self.paths.broker_cert)
            if broker_until is not None and broker_until - now < renew_before:
                issued = self._issue_broker_certificate_locked(
                    broker_extra_hostnames(self.paths), now
                )
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
