"""Enrollment: one-time tokens and the exchange of a device's CSR for its certificate.

Pure functions over values: the server stores what :func:`issue_enrollment_token`
returns (the hash and the expiry, on the device's row), looks the record up by
:func:`hash_enrollment_token` of the presented token, and calls
:func:`enroll_device`; it then marks the token used and records the serial.
The token itself is shown once to the administrator and never stored.

Tokens are 256 bits from :mod:`secrets`, so a plain SHA-256 (with a domain
prefix) is a sound way to store them: unlike passwords they cannot be guessed,
and a fast hash lets the server find the record by its hash. The comparison is
still constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from provisioning.ca import DEVICE_VALIDITY, CertificateAuthority
from provisioning.pki import IssuedCertificate
from shared.errors import AuthError, Conflict
from shared.ids import new_token, utcnow

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL: Final = timedelta(hours=24)
_HASH_PREFIX: Final = b"fieldlink-enrollment-token-v1:"
#: Tokens longer than this are refused unhashed (they cannot be ours).
_MAX_TOKEN_LENGTH: Final = 256


class EnrollmentError(AuthError):
    """An enrollment token cannot be used. Messages never contain the token."""


class UnknownEnrollmentToken(EnrollmentError):
    """No device has this token (mistyped, tampered with, or replaced by a newer one)."""


class UsedEnrollmentToken(EnrollmentError, Conflict):
    """The token was already used to enroll; tokens work once."""


class ExpiredEnrollmentToken(EnrollmentError):
    """The token is past its expiry; ask an administrator for a new one."""


class EnrollmentRecord(Protocol):
    """What the server keeps about a device's pending enrollment (e.g. its ``Device`` row)."""

    @property
    def id(self) -> str:
        """The device id."""
        ...

    @property
    def enrollment_token_hash(self) -> str | None:
        """:func:`hash_enrollment_token` of the token, or ``None`` when none is pending."""
        ...

    @property
    def enrollment_expires_at(self) -> datetime | None:
        """When the token stops working."""
        ...

    @property
    def enrolled_at(self) -> datetime | None:
        """When the token was used, or ``None``."""
        ...


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    """A new token: show ``token`` once, store ``token_hash`` and ``expires_at``."""

    token: str
    token_hash: str
    expires_at: datetime

    def __repr__(self) -> str:
        # Never let the secret reach a log through a repr.
        return f"IssuedEnrollmentToken(token=<hidden>, expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True)
class EnrollmentResult:
    """What ``POST /api/v1/enroll`` answers, minus the URLs the server adds."""

    device_id: str
    certificate: IssuedCertificate
    ca_pem: str
    command_public_key_pem: str

    def response(self, *, broker_url: str, server_url: str) -> dict[str, str]:
        """The JSON body of the enrollment answer (docs/protocol.md field names)."""
        return {
            "device_id": self.device_id,
            "cert_pem": self.certificate.cert_pem,
            "ca_pem": self.ca_pem,
            "broker_url": broker_url,
            "server_url": server_url,
            "command_public_key_pem": self.command_public_key_pem,
        }


def hash_enrollment_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex over a domain prefix and the token."""
    return hashlib.sha256(_HASH_PREFIX + token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_enrollment_token(
    ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None
) -> IssuedEnrollmentToken:
    """Make a new one-time enrollment token.

    Args:
        ttl: How long it works (24 hours by default).
        now: The current time (tests).
    """
    if ttl <= timedelta(0):
        msg = "the enrollment token's lifetime must be positive"
        raise ValueError(msg)
    token = new_token(32)
    return IssuedEnrollmentToken(
        token=token,
        token_hash=hash_enrollment_token(token),
        expires_at=(now or utcnow()) + ttl,
    )


def check_enrollment_token(
    token: str, record: EnrollmentRecord | None, now: datetime | None = None
) -> str:
    """Check a presented token against the record found by its hash.

    Args:
        token: The token the device presented.
        record: The device whose stored hash matched, or ``None`` when none did.
        now: The current time (tests).

    Returns:
        The device id the token enrolls.

    Raises:
        UnknownEnrollmentToken: no record, or the hash does not match.
        UsedEnrollmentToken: the token was used already.
        ExpiredEnrollmentToken: the token has expired.
    """
    if record is None or record.enrollment_token_hash is None or len(token) > _MAX_TOKEN_LENGTH:
        msg = "unknown enrollment token"
        raise UnknownEnrollmentToken(msg)
    presented = hash_enrollment_token(token).encode()
    if not hmac.compare_digest(presented, record.enrollment_token_hash.encode()):
        msg = "unknown enrollment token"
        raise UnknownEnrollmentToken(msg)
    if record.enrolled_at is not None:
        msg = f"this enrollment token was already used (device {record.id} is enrolled)"
        raise UsedEnrollmentToken(msg)
    now = now or utcnow()
    if record.enrollment_expires_at is None or record.enrollment_expires_at <= now:
        msg = f"this enrollment token for device {record.id} has expired: issue a new one"
        raise ExpiredEnrollmentToken(msg)
    return record.id


def enroll_device(
    ca: CertificateAuthority,
    token: str,
    record: EnrollmentRecord | None,
    csr_pem: str,
    *,
    validity: timedelta = DEVICE_VALIDITY,
    now: datetime | None = None,
) -> EnrollmentResult:
    """Check the token and sign the device's CSR.

    The certificate's CN is always the device id the token belongs to,
    whatever the CSR asks for. The caller then marks the token used
    (``enrolled_at``, clear the hash) and records ``certificate.serial_hex``
    and ``certificate.not_after``, in the same transaction as its lookup.

    Raises:
        EnrollmentError: a subclass per problem with the token.
        provisioning.pki.BadCsr: the CSR is unreadable, badly signed or uses a refused key.
    """
    now = now or utcnow()
    device_id = check_enrollment_token(token, record, now)
    certificate = ca.sign_device_csr(csr_pem, device_id, validity=validity, now=now)
    logger.info("device %s enrolled (certificate %s)", device_id, certificate.serial_hex)
    return EnrollmentResult(
        device_id=device_id,
        certificate=certificate,
        ca_pem=ca.ca_pem,
        command_public_key_pem=ca.command_public_key_pem,
    )
