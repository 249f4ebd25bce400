"""Database operations on users, tokens and devices; keyword-only, no HTTP in here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, or_, select

from provisioning.ca import CertificateAuthority, IssuedCertificate, RenewalRefused
from provisioning.enroll import (
    EnrollmentResult,
    enroll_device,
    hash_enrollment_token,
    issue_enrollment_token,
)
from server import audit
from server.models import ROLES, Alert, ApiToken, Device, DeviceCreate, User
from server.security import hash_password, hash_token, new_bearer_token, verify_password
from shared.errors import AuthError, Conflict, FieldlinkError, NotFound
from shared.ids import check_device_id, derive_device_id, utcnow


class InvalidInput(FieldlinkError):
    """A value a user gave is not acceptable (the API answers 422, the CLI one line)."""


# Users and tokens.


def create_user(
    session: Session, *, username: str, role: str, password: str, actor: str = audit.SYSTEM_ACTOR
) -> User:
    """Create a user; the password is stored only as an argon2 hash.

    Raises:
        InvalidInput: for an unknown role, a bad name or a too short password.
        Conflict: when the name is taken.
    """
    if role not in ROLES:
        msg = f"unknown role {role!r}: use one of {', '.join(ROLES)}"
        raise InvalidInput(msg)
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        msg = "user names are 1-64 letters, digits, '.', '-' or '_'"
        raise InvalidInput(msg)
    if len(password) < 8:
        msg = "passwords need at least 8 characters"
        raise InvalidInput(msg)
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    try:
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="user.create",
            target=f"user:{username}",
            details={"role": role},
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        msg = f"user {username!r} already exists"
        raise Conflict(msg) from exc
    session.refresh(user)
    return user


def get_user(session: Session, *, username: str) -> User | None:
    """The user of that name, if any."""
    return session.exec(select(User).where(User.username == username)).first()


def authenticate(session: Session, *, username: str, password: str) -> User:
    """The user whose name and password these are.

    Raises:
        AuthError: for an unknown user, a wrong password or a disabled user (same message).
    """
    user = get_user(session, username=username)
    ok = verify_password(password, user.password_hash if user else None)
    if user is None or not ok or user.disabled:
        msg = "wrong user name or password"
        raise AuthError(msg)
    return user


def issue_token(
    session: Session,
    *,
    user: User,
    kind: str,
    ttl: timedelta | None,
    name: str | None = None,
    actor: str | None = None,
) -> tuple[str, ApiToken]:
    """Issue a bearer token; only its hash is stored. Returns ``(token, row)``."""
    token, token_hash = new_bearer_token()
    if user.id is None:
        msg = "the user must be saved before it gets a token"
        raise InvalidInput(msg)
    row = ApiToken(
        token_hash=token_hash,
        user_id=user.id,
        kind=kind,
        name=name,
        expires_at=utcnow() + ttl if ttl is not None else None,
    )
    session.add(row)
    if actor is not None:  # long-lived tokens are audited; logins are audited by the route
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="token.create",
            target=f"token:{row.id}",
            details={"name": name, "owner": user.username, "kind": kind},
        )
    session.commit()
    session.refresh(row)
    return token, row


def user_for_token(session: Session, token: str) -> User | None:
    """The enabled user a live (unexpired, unrevoked) token belongs to."""
    row = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    api_token, user = row
    now = utcnow()
    if api_token.revoked_at is not None or user.disabled:
        return None
    if api_token.expires_at is not None and api_token.expires_at <= now:
        return None
    return user


# Devices.


def _add_device(session: Session, *, data: DeviceCreate) -> Device:
    """Insert a device (flushed, not committed); its id is derived from type and serial if absent.

    Raises:
        Conflict: when the id is taken.
    """
    device_id = check_device_id(data.id) if data.id else derive_device_id(data.type, data.serial)
    device = Device(**data.model_dump(exclude={"id"}), id=device_id)
    session.add(device)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        msg = f"device {device_id!r} already exists"
        raise Conflict(msg) from exc
    return device


def create_device(session: Session, *, data: DeviceCreate) -> Device:
    """Register a device without an enrollment token (imports, tests).

    Raises:
        Conflict: when the id is taken.
    """
    device = _add_device(session, data=data)
    session.commit()
    session.refresh(device)
    return device


def get_device(session: Session, *, device_id: str) -> Device:
    """The device with that id.

    Raises:
        NotFound: when there is none.
    """
    device = session.get(Device, device_id)
    if device is None:
        msg = f"no device {device_id!r}"
        raise NotFound(msg)
    return device


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def list_devices(
    session: Session,
    *,
    q: str | None = None,
    online: bool | None = None,
    device_type: str | None = None,
    customer: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[Device], int]:
    """A page of devices matching the filters, and how many match in all.

    ``q`` matches id, serial, customer and site by substring (case-insensitive),
    and the contact phone by its digits, so "+49 30 1234" finds "0049-30-1234".
    """
    conditions: list[Any] = []
    if q:
        # ``%`` and ``_`` in the search are literal characters, not wildcards.
        literal = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        options = [
            func.lower(Device.id).like(pattern, escape="\\"),
            func.lower(Device.serial).like(pattern, escape="\\"),
            func.lower(Device.customer).like(pattern, escape="\\"),
            func.lower(func.coalesce(Device.site, "")).like(pattern, escape="\\"),
        ]
        digits = _digits(q)
        if len(digits) >= 3:
            phone: Any = func.coalesce(Device.contact_phone, "")
            for ch in " +-()/.":
                phone = func.replace(phone, ch, "")
            options.append(phone.like(f"%{digits.lstrip('0') or digits}%"))
        conditions.append(or_(*options))
    if online is not None:
        conditions.append(col(Device.online).is_(online))
    if device_type:
        conditions.append(Device.type == device_type)
    if customer:
        conditions.append(Device.customer == customer)
    if status:
        conditions.append(Device.status == status)
    where = sa.and_(sa.true(), *conditions)
    total = session.exec(select(func.count()).select_from(Device).where(where)).one()
    rows = session.exec(
        select(Device).where(where).order_by(col(Device.id)).limit(limit).offset(offset)
    ).all()
    return rows, int(total)


def open_alerts(session: Session, *, device_id: str) -> Sequence[Alert]:
    """The device's open alerts, newest first."""
    return session.exec(
        select(Alert)
        .where(Alert.device_id == device_id, col(Alert.open).is_(True))
        .order_by(col(Alert.raised_at).desc())
    ).all()


def recent_alerts(session: Session, *, device_id: str, limit: int = 50) -> Sequence[Alert]:
    """The device's alerts, open or cleared, newest first."""
    return session.exec(
        select(Alert)
        .where(Alert.device_id == device_id)
        .order_by(col(Alert.raised_at).desc())
        .limit(limit)
    ).all()


def register_device(
    session: Session,
    *,
    data: DeviceCreate,
    token_ttl: timedelta = timedelta(hours=24),
    actor: str = audit.SYSTEM_ACTOR,
) -> tuple[Device, str]:
    """Register a device and give it a one-time enrollment token (stored only as a hash).

    Returns:
        The device and the token, which is shown once and never stored.
    """
    device = _add_device(session, data=data)
    issued = issue_enrollment_token(token_ttl)
    device.enrollment_token_hash = issued.token_hash
    device.enrollment_expires_at = issued.expires_at
    session.add(device)
    audit.record(
        session,
        actor=actor,
        action="device.register",
        target=f"device:{device.id}",
        details={"type": device.type, "serial": device.serial, "customer": device.customer},
    )
    session.commit()
    session.refresh(device)
    return device, issued.token


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
        provisioning.ca.BadCsr: an unreadable or refused CSR.
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
        provisioning.ca.RenewalRefused: a foreign, expired or revoked certificate, a bad
            proof, or a device that is revoked or no longer registered.
        provisioning.ca.BadCsr: an unreadable or refused CSR.
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
    audit.record(session, actor=actor, action="device.revoke", target=f"device:{device_id}")
    session.commit()
    session.refresh(device)
    return device
