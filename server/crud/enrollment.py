"""A device's identity: registration with a one-time token, enrollment, renewal, revocation.

The certificate work is :mod:`provisioning`'s; here are the rows and audit entries.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from provisioning.ca import CertificateAuthority
from provisioning.enroll import (
    EnrollmentResult,
    enroll_device,
    hash_enrollment_token,
    issue_enrollment_token,
)
from provisioning.pki import IssuedCertificate, RenewalRefused
from server import audit
from server.crud.devices import add_device, get_device
from server.ingest import via
from server.models import Device, DeviceCreate
from server.models.telemetry import DeviceEventRecord
from shared.errors import AuthError, Conflict
from shared.ids import utcnow


def register_device(
    session: Session,
    *,
    data: DeviceCreate,
    token_ttl: timedelta = timedelta(hours=24),
    actor: str = audit.SYSTEM_ACTOR,
) -> tuple[Device, str | None]:
    """Register a device and give it a one-time enrollment token (stored only as a hash).

    A device watched through a site gateway (``via``) runs no agent: it gets no
    token and can never enroll (its gateway publishes for it).

    Returns:
        The device and the token, which is shown once and never stored (``None``
        for a watched device).
    """
    device = add_device(session, data=data, actor=actor)
    token: str | None = None
    if device.via is None:
        issued = issue_enrollment_token(token_ttl)
        device.enrollment_token_hash = issued.token_hash
        device.enrollment_expires_at = issued.expires_at
        token = issued.token
    session.add(device)
    details = {"type": device.type, "serial": device.serial, "customer": device.customer}
    if device.via is not None:
        details["via"] = device.via
    audit.record(
        session,
        actor=actor,
        action="device.register",
        target=f"device:{device.id}",
        details=details,
    )
    session.commit()
    session.refresh(device)
    return device, token


def new_enrollment_token(
    session: Session,
    *,
    device_id: str,
    token_ttl: timedelta = timedelta(hours=24),
    actor: str = audit.SYSTEM_ACTOR,
) -> tuple[Device, str]:
    """Give a registered, not yet enrolled (or revoked and re-admitted) device a fresh token.

    Raises:
        NotFound: for an unknown device.
        Conflict: when the device is enrolled already (revoke it first).
    """
    device = get_device(session, device_id=device_id)
    if device.via is not None:
        msg = f"device {device_id!r} is watched via {device.via!r}: it runs no agent to enroll"
        raise Conflict(msg)
    if device.enrolled_at is not None and device.revoked_at is None:
        msg = f"device {device_id!r} is enrolled: revoke it before enrolling it again"
        raise Conflict(msg)
    issued = issue_enrollment_token(token_ttl)
    device.enrollment_token_hash = issued.token_hash
    device.enrollment_expires_at = issued.expires_at
    device.enrolled_at = None
    device.revoked_at = None
    session.add(device)
    audit.record(
        session, actor=actor, action="device.enrollment_token", target=f"device:{device.id}"
    )
    session.commit()
    session.refresh(device)
    return device, issued.token


def enroll(
    session: Session,
    *,
    ca: CertificateAuthority,
    token: str,
    csr_pem: str,
    ssh_host_key: str | None = None,
    source_ip: str | None = None,
) -> EnrollmentResult:
    """Check a one-time token, sign the device's CSR, and mark the token used, atomically.

    The device row is locked (PostgreSQL ``FOR UPDATE``; SQLite serializes
    writers) so one token can never enroll twice, even from two servers at once.

    Raises:
        provisioning.enroll.EnrollmentError: unknown, used or expired token.
        provisioning.pki.BadCsr: an unreadable or refused CSR.
    """
    token_hash = hash_enrollment_token(token)
    device = session.exec(
        select(Device).where(Device.enrollment_token_hash == token_hash).with_for_update()
    ).first()
    result = enroll_device(ca, token, device, csr_pem)  # refuses a missing record
    if device is None:  # pragma: no cover - enroll_device raised already
        msg = "unknown enrollment token"
        raise AuthError(msg)
    # The used token's hash stays, so that a second use is told "already used"
    # (enrolled_at refuses it) rather than "unknown".
    device.enrolled_at = utcnow()
    device.cert_serial = result.certificate.serial_hex
    device.cert_not_after = result.certificate.not_after
    device.revoked_at = None
    if ssh_host_key:
        device.ssh_host_key = ssh_host_key
    session.add(device)
    audit.record(
        session,
        actor=audit.device_actor(device.id),
        action="device.enroll",
        target=f"device:{device.id}",
        details={"certificate_serial": result.certificate.serial_hex},
        source_ip=source_ip,
    )
    session.commit()
    return result


def renew(
    session: Session,
    *,
    ca: CertificateAuthority,
    cert_pem: str,
    csr_pem: str,
    proof: str,
    source_ip: str | None = None,
) -> tuple[str, IssuedCertificate]:
    """Renew a device's certificate; the device proves it holds its current key.

    Raises:
        provisioning.pki.RenewalRefused: a foreign, expired or revoked certificate, a bad
            proof, or a device that is revoked or no longer registered.
        provisioning.pki.BadCsr: an unreadable or refused CSR.
    """
    issued = ca.renew_device_certificate(cert_pem, csr_pem, proof)
    device_id = issued.common_name
    device = session.exec(select(Device).where(Device.id == device_id).with_for_update()).first()
    if device is None or device.revoked_at is not None:
        ca.revoke_serials([issued.serial], reason="cessation_of_operation")
        msg = f"device {device_id} is revoked or not registered"
        raise RenewalRefused(msg)
    device.cert_serial = issued.serial_hex
    device.cert_not_after = issued.not_after
    session.add(device)
    audit.record(
        session,
        actor=audit.device_actor(device_id),
        action="device.renew",
        target=f"device:{device_id}",
        details={"certificate_serial": issued.serial_hex},
        source_ip=source_ip,
    )
    session.commit()
    return device_id, issued


def revoke_device(
    session: Session, *, ca: CertificateAuthority, device_id: str, actor: str = audit.SYSTEM_ACTOR
) -> Device:
    """Revoke every certificate of a device and mark it revoked (and offline) at once.

    A site gateway's watched devices go offline at once too (``gateway_revoked``): the
    revoked gateway can no longer speak for them.

    Raises:
        NotFound: for an unknown device.
    """
    device = get_device(session, device_id=device_id)
    ca.revoke_device(device_id, reason="cessation_of_operation")
    now = utcnow()
    device.revoked_at = now
    device.enrollment_token_hash = None
    device.enrollment_expires_at = None
    if device.online:
        device.online = False
        device.online_reason = "revoked"
        device.online_changed_at = now
    session.add(device)
    session.flush()
    via.take_watched_offline(
        session.connection(),
        [(device_id, now)],
        skip=set(),
        events=DeviceEventRecord.__table__,  # type: ignore[attr-defined]
        reason=via.GATEWAY_REVOKED,
    )
    audit.record(session, actor=actor, action="device.revoke", target=f"device:{device_id}")
    session.commit()
    session.refresh(device)
    return device
