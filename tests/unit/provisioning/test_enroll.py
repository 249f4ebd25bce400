"""One-time enrollment tokens and the CSR exchange."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.ca import CertificateAuthority
from provisioning.enroll import (
    EnrollmentError,
    ExpiredEnrollmentToken,
    UnknownEnrollmentToken,
    UsedEnrollmentToken,
    check_enrollment_token,
    enroll_device,
    hash_enrollment_token,
    issue_enrollment_token,
)
from provisioning.pki import BadCsr, common_name
from shared.errors import AuthError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class PendingDevice:
    """What the server's Device row holds about enrollment."""

    id: str
    enrollment_token_hash: str | None
    enrollment_expires_at: datetime | None
    enrolled_at: datetime | None = None


def pending(
    device_id: str = "mfp-0042", ttl: timedelta = timedelta(hours=24)
) -> tuple[str, PendingDevice]:
    issued = issue_enrollment_token(ttl, now=NOW)
    return issued.token, PendingDevice(device_id, issued.token_hash, issued.expires_at)


def csr_pem(cn: str = "enrolling") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_token_is_random_stored_as_hash_and_expires_in_24_hours() -> None:
    first = issue_enrollment_token(now=NOW)
    second = issue_enrollment_token(now=NOW)
    assert first.token != second.token
    assert len(first.token) >= 40
    assert first.token not in first.token_hash
    assert first.token_hash == hash_enrollment_token(first.token)
    assert first.expires_at == NOW + timedelta(hours=24)
    assert first.token not in repr(first)


def test_valid_token_names_its_device() -> None:
    token, record = pending()
    assert check_enrollment_token(token, record, now=NOW + timedelta(hours=1)) == "mfp-0042"


def test_tampered_or_unknown_token_is_refused_without_echoing_it() -> None:
    token, record = pending()
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for presented, found in ((tampered, record), (token, None), ("x" * 10_000, record)):
        with pytest.raises(UnknownEnrollmentToken) as info:
            check_enrollment_token(presented, found, now=NOW)
        assert presented not in str(info.value)
        assert token not in str(info.value)


def test_used_token_is_refused() -> None:
    token, record = pending()
    record.enrolled_at = NOW
    with pytest.raises(UsedEnrollmentToken, match="already used") as info:
        check_enrollment_token(token, record, now=NOW)
    assert token not in str(info.value)


def test_expired_token_is_refused() -> None:
    token, record = pending(ttl=timedelta(minutes=10))
    with pytest.raises(ExpiredEnrollmentToken, match="expired") as info:
        check_enrollment_token(token, record, now=NOW + timedelta(minutes=10))
    assert token not in str(info.value)
    assert isinstance(info.value, AuthError)


def test_token_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        issue_enrollment_token(timedelta(0))


def test_enroll_device_signs_the_csr_for_the_tokens_device(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    token, record = pending("img-0007")
    result = enroll_device(ca, token, record, csr_pem(cn="mfp-9999"), now=NOW)
    cert = x509.load_pem_x509_certificate(result.certificate.cert_pem.encode())
    # The CN a device asks for is ignored: it is the token's device.
    assert common_name(cert) == "img-0007"
    body = result.response(broker_url="mqtts://broker:8883", server_url="https://center")
    assert set(body) == {
        "device_id",
        "cert_pem",
        "ca_pem",
        "broker_url",
        "server_url",
        "command_public_key_pem",
    }
    assert body["ca_pem"] == ca.ca_pem
    assert body["command_public_key_pem"] == ca.command_public_key_pem


def test_enroll_device_refuses_bad_token_before_touching_the_csr(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    _, record = pending()
    with pytest.raises(EnrollmentError):
        enroll_device(ca, "wrong", record, "not even a csr", now=NOW)
    token, record = pending()
    with pytest.raises(BadCsr):
        enroll_device(ca, token, record, "not even a csr", now=NOW)
    assert ca.issued_certificates() == []
