"""The X.509 objects the CA makes and checks: keys, CSRs, certificates, the CRL (no files).

:mod:`provisioning.ca` decides what to issue and keeps the files; this module
only builds and verifies, so each piece is a pure function of its arguments.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.pki import BadCsr, RenewalRefused, RevokedEntry

KeyType = Literal["ec-p256", "rsa-2048"]
KEY_TYPES: Final[tuple[KeyType, ...]] = ("ec-p256", "rsa-2048")

# Certificates start a little in the past: a device clock slightly behind still accepts them.
_BACKDATE: Final = timedelta(minutes=5)

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CsrPublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def new_key(key_type: KeyType) -> PrivateKey:
    """A fresh key of the CA's type, for the CA itself or a service certificate."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_type_of(key: PrivateKey) -> KeyType:
    """``rsa-2048`` for an RSA key, ``ec-p256`` otherwise."""
    return "rsa-2048" if isinstance(key, rsa.RSAPrivateKey) else "ec-p256"


def check_csr_key(key: object) -> CsrPublicKey:
    """The key of a CSR when it is one the CA accepts.

    Raises:
        BadCsr: naming the refused curve, size or type.
    """
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
    check_csr_key(csr.public_key())
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


def _key_usage(*, digital_signature_only: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not digital_signature_only,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def build_ca_certificate(key: PrivateKey, now: datetime, validity: timedelta) -> x509.Certificate:
    """A self-signed CA certificate with a random name suffix (path length 0)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldlink"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fieldlink device CA {secrets.token_hex(4)}"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature_only=True, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: CsrPublicKey,
    cn: str,
    validity: timedelta,
    now: datetime,
    *,
    server: bool = False,
    hostnames: Iterable[str] = (),
) -> x509.Certificate:
    """A certificate for ``public_key`` named ``CN=cn``, never outliving the CA.

    Client authentication only, or server authentication when ``server`` (with
    ``hostnames`` as its subject alternative names).
    """
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
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature_only=digital_only, ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    alt_names = _alt_names(hostnames)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    crl_number: int,
    entries: Iterable[RevokedEntry],
    now: datetime,
    validity: timedelta,
) -> bytes:
    """The CRL (PEM) listing ``entries``, valid from ``now`` for ``validity``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def check_renewal_proof(
    current: x509.Certificate, csr: x509.CertificateSigningRequest, proof: str
) -> None:
    """Check that ``proof`` is the current key's signature over the CSR's DER bytes.

    ``proof`` is base64url (padding optional) of an ECDSA with SHA-256, RSA
    PKCS#1 v1.5 with SHA-256, or Ed25519 signature.

    Raises:
        RenewalRefused: when it is not base64url or does not verify.
    """
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
