"""Two-factor logins: TOTP (RFC 6238, :mod:`pyotp`) and one-time recovery codes.

A user enrols in two steps: :func:`begin_enrolment` makes a secret on the
server (shown once, as an ``otpauth://`` URI and in base32) and
:func:`confirm_enrolment` activates it with a first code from the
authenticator, giving ten recovery codes (shown once, stored as SHA-256
hashes, each good for one login). From then on a login needs a code after the
password (:mod:`server.logins`), and minting a long-lived API token needs
one (:func:`check_code`); using such a token does not.

- Secrets are encrypted at rest (Fernet, :mod:`server.secretbox`) with the key in ``mfa_key_file``
  (default ``state_dir/mfa.key``, made at first use, mode 0600); they are never
  logged, audited or returned after enrolment.
- A code is accepted for its 30-second step and the steps either side (clock
  drift), and never twice: the last accepted step is stored and only later
  steps count (an atomic ``UPDATE``, so two requests racing with one code do
  not both win). A recovery code is spent the same way.
- Codes are compared in constant time; wrong codes count as failed logins
  (the callers run them through the login throttle).
- ``[server] mfa_required_roles`` makes it compulsory per role: until such a
  user has it, their logins may only enrol (:func:`enrolment_pending`).
- Every change is audited (``mfa.enrol``, ``mfa.enable``, ``mfa.disable``,
  ``mfa.reset``, ``mfa.recovery_codes``), never with the secret or codes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyotp
import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from server import audit, secretbox
from server.config import ServerSettings
from server.models import MfaRecoveryCode, User, UserMfa
from shared.errors import AuthError, Conflict, NotFound
from shared.ids import utcnow

#: Seconds per TOTP step, and how many steps either side of now are accepted.
STEP_S = 30
DRIFT_STEPS = 1
DIGITS = 6
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_HALF = 5


#: The MFA key file is unreadable or does not decrypt a stored secret.
MfaKeyError = secretbox.SecretKeyError
key_path = secretbox.key_path
_encrypt = secretbox.encrypt
_decrypt = secretbox.decrypt


def hash_recovery_code(code: str) -> str:
    """SHA-256 of a recovery code as typed (case, spaces and dashes do not matter)."""
    normal = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(normal.encode()).hexdigest()


def _new_recovery_code() -> str:
    chars = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(2 * _RECOVERY_HALF))
    return f"{chars[:_RECOVERY_HALF]}-{chars[_RECOVERY_HALF:]}"


def _record(session: Session, user: User) -> UserMfa | None:
    return session.get(UserMfa, user.id)


def is_active(session: Session, user: User) -> bool:
    """Whether ``user`` logs in with a second factor."""
    row = _record(session, user)
    return row is not None and row.confirmed_at is not None


def active_user_ids(session: Session, user_ids: list[int]) -> set[int]:
    """Which of ``user_ids`` have an active second factor."""
    if not user_ids:
        return set()
    rows = session.exec(
        select(UserMfa.user_id).where(
            col(UserMfa.user_id).in_(user_ids), col(UserMfa.confirmed_at).is_not(None)
        )
    ).all()
    return set(rows)


def required_for(settings: ServerSettings, user: User) -> bool:
    """Whether ``user``'s role must log in with a second factor."""
    return user.role in settings.mfa_required_roles


def enrolment_pending(session: Session, settings: ServerSettings, user: User) -> bool:
    """Whether ``user`` must enrol a second factor before doing anything else."""
    return required_for(settings, user) and not is_active(session, user)


@dataclass(frozen=True)
class MfaStatus:
    """A user's second factor as they may see it (never the secret)."""

    enabled: bool
    pending: bool
    required: bool
    recovery_codes_left: int


def status(session: Session, settings: ServerSettings, user: User) -> MfaStatus:
    """``user``'s second factor: on, being enrolled, required, recovery codes left."""
    row = _record(session, user)
    left = session.exec(
        select(func.count())
        .select_from(MfaRecoveryCode)
        .where(MfaRecoveryCode.user_id == user.id, col(MfaRecoveryCode.used_at).is_(None))
    ).one()
    return MfaStatus(
        enabled=row is not None and row.confirmed_at is not None,
        pending=row is not None and row.confirmed_at is None,
        required=required_for(settings, user),
        recovery_codes_left=int(left) if row is not None and row.confirmed_at else 0,
    )


@dataclass(frozen=True)
class Enrolment:
    """A new TOTP secret, shown once: for the authenticator app."""

    secret: str
    otpauth_uri: str


def begin_enrolment(
    session: Session, settings: ServerSettings, *, user: User, source_ip: str | None = None
) -> Enrolment:
    """Make a new secret for ``user`` (replacing one not yet confirmed).

    Raises:
        Conflict: the user has an active second factor already.
    """
    row = _record(session, user)
    if row is not None and row.confirmed_at is not None:
        msg = "two-factor login is on already: turn it off first to enrol a new authenticator"
        raise Conflict(msg)
    secret = pyotp.random_base32()
    if row is None:
        row = UserMfa(user_id=user.id or 0, secret="")
    row.secret = _encrypt(settings, secret)
    row.last_step = None
    row.created_at = utcnow()
    session.add(row)
    audit.record(
        session,
        actor=user.username,
        action="mfa.enrol",
        target=f"user:{user.username}",
        source_ip=source_ip,
    )
    session.commit()
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=user.username, issuer_name=settings.mfa_issuer
    )
    return Enrolment(secret=secret, otpauth_uri=uri)


def _step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_S


def _use_totp(
    session: Session, settings: ServerSettings, row: UserMfa, code: str, now: datetime
) -> bool:
    """Whether ``code`` is the TOTP of a step near ``now`` not used before (spends it)."""
    if len(code) != DIGITS or not code.isdigit():
        return False
    totp = pyotp.TOTP(_decrypt(settings, row.secret), digits=DIGITS, interval=STEP_S)
    current = _step(now)
    matched: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        expected = totp.generate_otp(step)
        # Every candidate is compared (constant time), whatever matched before.
        if hmac.compare_digest(expected, code) and matched is None:
            matched = step
    if matched is None or (row.last_step is not None and matched <= row.last_step):
        return False
    spent = session.execute(
        sa.update(UserMfa)
        .where(
            col(UserMfa.user_id) == row.user_id,
            sa.or_(col(UserMfa.last_step).is_(None), col(UserMfa.last_step) < matched),
        )
        .values(last_step=matched)
        .execution_options(synchronize_session=False)
    )
    if int(getattr(spent, "rowcount", 0) or 0) != 1:
        return False
    row.last_step = matched
    return True


def _use_recovery_code(session: Session, user: User, code: str, now: datetime) -> bool:
    spent = session.execute(
        sa.update(MfaRecoveryCode)
        .where(
            col(MfaRecoveryCode.user_id) == user.id,
            col(MfaRecoveryCode.code_hash) == hash_recovery_code(code),
            col(MfaRecoveryCode.used_at).is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(spent, "rowcount", 0) or 0) == 1


def use_code(
    session: Session, settings: ServerSettings, *, user: User, code: str, now: datetime
) -> str | None:
    """Check and spend a login's second factor; how (``totp``, ``recovery_code``) or ``None``.

    Does not commit: the caller's transaction spends the code with the login.
    """
    row = _record(session, user)
    if row is None or row.confirmed_at is None:
        return None
    typed = "".join(code.split())[:64]
    if not typed:
        return None
    if _use_totp(session, settings, row, typed, now):
        return "totp"
    if _use_recovery_code(session, user, typed, now):
        return "recovery_code"
    return None


def check_code(
    session: Session, settings: ServerSettings, *, user: User, code: str, now: datetime
) -> str:
    """Spend a current code (or a recovery code) for a step that asks for it again (turning
    the second factor off, minting an API token); how (``totp``, ``recovery_code``).

    Does not commit: the caller's transaction spends the code with what it guards.

    Raises:
        AuthError: the code is wrong, spent or missing (the caller counts a failed login).
    """
    method = use_code(session, settings, user=user, code=code, now=now)
    if method is None:
        session.rollback()
        msg = "the code is wrong"
        raise AuthError(msg)
    return method


def _spend_totp(
    session: Session, settings: ServerSettings, row: UserMfa, code: str, now: datetime
) -> None:
    """Spend a current TOTP code (not a recovery code), or roll back and raise AuthError."""
    if not _use_totp(session, settings, row, "".join(code.split())[:64], now):
        session.rollback()
        msg = "the code is wrong"
        raise AuthError(msg)


def _issue_recovery_codes(
    session: Session, user: User, *, action: str, source_ip: str | None
) -> list[str]:
    """New recovery codes in place of the old ones; audited as ``action`` and committed."""
    _remove(session, user, recovery_codes_only=True)
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(MfaRecoveryCode(user_id=user.id or 0, code_hash=hash_recovery_code(code)))
    audit.record(
        session,
        actor=user.username,
        action=action,
        target=f"user:{user.username}",
        details={"recovery_codes": len(codes)},
        source_ip=source_ip,
    )
    session.commit()
    return codes


def confirm_enrolment(
    session: Session,
    settings: ServerSettings,
    *,
    user: User,
    code: str,
    now: datetime,
    source_ip: str | None = None,
) -> list[str]:
    """Turn the second factor on with a first code; the recovery codes (shown once).

    Raises:
        NotFound: no enrolment was begun.
        Conflict: it is on already.
        AuthError: the code is wrong (the caller counts it as a failed login).
    """
    row = _record(session, user)
    if row is None:
        msg = "no enrolment in progress: POST /api/v1/auth/mfa first"
        raise NotFound(msg)
    if row.confirmed_at is not None:
        msg = "two-factor login is on already"
        raise Conflict(msg)
    _spend_totp(session, settings, row, code, now)
    row.confirmed_at = utcnow()
    session.add(row)
    return _issue_recovery_codes(session, user, action="mfa.enable", source_ip=source_ip)


def regenerate_recovery_codes(
    session: Session,
    settings: ServerSettings,
    *,
    user: User,
    code: str,
    now: datetime,
    source_ip: str | None = None,
) -> list[str]:
    """New recovery codes (the old ones stop working), on a current TOTP code.

    Raises:
        Conflict: two-factor login is off.
        AuthError: the code is wrong.
    """
    row = _record(session, user)
    if row is None or row.confirmed_at is None:
        msg = "two-factor login is off"
        raise Conflict(msg)
    _spend_totp(session, settings, row, code, now)
    return _issue_recovery_codes(session, user, action="mfa.recovery_codes", source_ip=source_ip)


def _remove(session: Session, user: User, *, recovery_codes_only: bool = False) -> bool:
    """Delete ``user``'s recovery codes and (unless told not to) their secret; whether
    they had a second factor (active or being enrolled)."""
    existed = _record(session, user) is not None
    tables: tuple[type[MfaRecoveryCode] | type[UserMfa], ...] = (MfaRecoveryCode,)
    if not recovery_codes_only:
        tables += (UserMfa,)
    for table in tables:
        session.execute(
            sa.delete(table)
            .where(col(table.user_id) == user.id)
            .execution_options(synchronize_session=False)
        )
    return existed


def disable(
    session: Session,
    settings: ServerSettings,
    *,
    user: User,
    code: str,
    now: datetime,
    source_ip: str | None = None,
) -> None:
    """Turn one's own second factor off, on a current code (or a recovery code).

    Raises:
        Conflict: it is off, or one's role requires it (an administrator resets it).
        AuthError: the code is wrong.
    """
    if not is_active(session, user):
        msg = "two-factor login is off"
        raise Conflict(msg)
    if required_for(settings, user):
        msg = f"the {user.role} role requires two-factor login: an administrator can reset it"
        raise Conflict(msg)
    method = check_code(session, settings, user=user, code=code, now=now)
    _remove(session, user)
    audit.record(
        session,
        actor=user.username,
        action="mfa.disable",
        target=f"user:{user.username}",
        details={"method": method},
        source_ip=source_ip,
    )
    session.commit()


#: What a current code does from one's account (the console's forms, the API's routes).
CodeAction = Literal["confirm", "recovery-codes", "disable"]


def act_on_code(
    session: Session,
    settings: ServerSettings,
    action: CodeAction,
    *,
    user: User,
    code: str,
    now: datetime,
    source_ip: str | None = None,
) -> list[str]:
    """Turn the second factor on (``confirm``), renew the recovery codes or turn it off
    (``disable``) on a current code; the new recovery codes (none on ``disable``).

    Raises what :func:`confirm_enrolment`, :func:`regenerate_recovery_codes` and
    :func:`disable` raise.
    """
    if action == "disable":
        disable(session, settings, user=user, code=code, now=now, source_ip=source_ip)
        return []
    step = confirm_enrolment if action == "confirm" else regenerate_recovery_codes
    return step(session, settings, user=user, code=code, now=now, source_ip=source_ip)


def reset(session: Session, *, username: str, actor: str, source_ip: str | None = None) -> bool:
    """An administrator removes a user's second factor (lost phone); whether there was one.

    The user logs in with the password alone next (and enrols again at once if
    their role requires it).

    Raises:
        NotFound: no such user.
    """
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        msg = f"no user {username!r}"
        raise NotFound(msg)
    existed = _remove(session, user)
    audit.record(
        session,
        actor=actor,
        action="mfa.reset",
        target=f"user:{user.username}",
        details={"had_mfa": existed},
        source_ip=source_ip,
    )
    session.commit()
    return existed
