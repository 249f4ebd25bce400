"""Password logins: the failure counts and locks in the database, and one login attempt.

The password flow gives a short-lived bearer token. Failed logins are counted
per user name tried and per source address in the database (so every server
process sees them): each failure answers a little later than the one before,
and :attr:`LoginPolicy.max_failures` failures within :attr:`LoginPolicy.window`
lock that name for :attr:`LoginPolicy.lockout`, answered with 429, how long in
the message and ``Retry-After``, whether or not the user exists. An address is
locked far more loosely (:attr:`LoginPolicy.ip_max_failures`), and never for a
name that logged in from it before: one guesser behind a call center's NAT
does not lock out the colleagues. A successful login resets the name's count;
``fieldlink user unlock`` lifts the name's lock and those of the addresses it
failed from. Every login, token and logout is audited, failures once per name,
address and window (with their count); no password or token ever reaches the
audit log.

The source address is the TCP peer's: proxy headers (``X-Forwarded-For``) are
believed only from the addresses in ``forwarded_allow_ips`` (none by default).

Keys of the ``login_throttle`` table::

    user:NAME          failures for a user name, from anywhere: locks at ``max_failures``
    ip:ADDRESS         failures from an address, for any name: locks at ``ip_max_failures``
    pair:NAME|ADDRESS  failures for a name from an address: one audit entry per window
    ok:NAME|ADDRESS    the name logged in from that address (``window_started_at``): a
                       known client, not held back by the address's lock (others' failures)

The API's and the console's routes (:mod:`server.api.routes.auth`,
:mod:`server.web.auth`) call these and answer 401 or 429.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, func, select

from server import audit, crud, mfa
from server.config import ServerSettings
from server.models import ApiToken, LoginThrottle, User
from server.models.base import UTCDateTime
from server.security import hash_token
from shared.errors import AuthError
from shared.ids import isoformat_z, utcnow

#: The actor of a login attempt that has not (yet) proved who it is.
ANONYMOUS_ACTOR = "anonymous"
#: The kind of the token between the password and the second factor (console): it
#: authenticates nothing else (:func:`server.crud.user_for_token` refuses it).
MFA_PENDING_KIND = "mfa_pending"
MFA_PENDING_TTL_S = 300
LOCKED_DETAIL = "too many failed logins"
_NAME_LIMIT = 128


@dataclass(frozen=True)
class LoginPolicy:
    """How failed logins slow down and lock.

    Attributes:
        max_failures: Failures for one user name within ``window`` that lock it.
        ip_max_failures: Failures from one source address within ``window`` that lock it
            (far higher: a call center shares one address) for names that have not
            logged in from it within ``known_client``.
        window: How long failures count.
        lockout: How long a lock lasts.
        known_client: How long a name that logged in from an address stays exempt
            from that address's lock.
        delay_step_s: The second failure in a row answers this much later, each
            further one twice as late as the one before...
        max_delay_s: ...up to this.
        clock: The current time (tests move it).
        sleep: How the answer to a failure waits (tests record it).
    """

    max_failures: int = 5
    ip_max_failures: int = 100
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)
    known_client: timedelta = timedelta(days=30)
    delay_step_s: float = 0.25
    max_delay_s: float = 2.0
    clock: Callable[[], datetime] = field(default=utcnow, compare=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> LoginPolicy:
        """The policy of ``settings`` (``login_*`` keys), defaults where a key is absent."""
        defaults = cls()
        return cls(
            max_failures=getattr(settings, "login_max_failures", defaults.max_failures),
            ip_max_failures=getattr(settings, "login_ip_max_failures", defaults.ip_max_failures),
            window=timedelta(
                seconds=getattr(settings, "login_window_s", defaults.window.total_seconds())
            ),
            lockout=timedelta(
                seconds=getattr(settings, "login_lockout_s", defaults.lockout.total_seconds())
            ),
            known_client=timedelta(
                days=getattr(settings, "login_known_client_days", defaults.known_client.days)
            ),
            delay_step_s=getattr(settings, "login_delay_step_s", defaults.delay_step_s),
            max_delay_s=getattr(settings, "login_max_delay_s", defaults.max_delay_s),
        )

    def delay_after(self, failures: int) -> float:
        """How long to wait before answering the ``failures``-th failure in a row."""
        if failures < 2 or self.delay_step_s <= 0:
            return 0.0
        return float(min(self.delay_step_s * 2 ** (failures - 2), self.max_delay_s))


def user_key(username: str) -> str:
    """The throttle key of a user name's failures."""
    return f"user:{username[:_NAME_LIMIT]}"


def _ip_key(address: str) -> str:
    return f"ip:{address[:64]}"


def _pair_key(username: str, address: str | None) -> str:
    return f"pair:{username[:_NAME_LIMIT]}|{(address or '-')[:64]}"


def _known_key(username: str, address: str) -> str:
    return f"ok:{username[:_NAME_LIMIT]}|{address[:64]}"


def locked_until(session: Session, keys: Sequence[str], now: datetime) -> datetime | None:
    """When the latest lock on any of ``keys`` ends, if one is in force at ``now``."""
    if not keys:
        return None
    until = session.exec(
        select(func.max(LoginThrottle.locked_until)).where(
            col(LoginThrottle.key).in_(keys), col(LoginThrottle.locked_until) > now
        )
    ).one()
    return until if isinstance(until, datetime) else None


def count_failure(
    session: Session, key: str, *, now: datetime, policy: LoginPolicy, limit: int
) -> tuple[int, datetime | None]:
    """Count a failed login against ``key``; lock it when the count reaches ``limit``.

    One atomic upsert, so concurrent failures in several processes all count.

    Returns:
        The failures within the window so far, and the end of the lock it caused.
    """
    when = sa.literal(now, UTCDateTime())
    expired = col(LoginThrottle.window_started_at) < sa.literal(now - policy.window, UTCDateTime())
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(LoginThrottle)
        .values(key=key, failures=1, window_started_at=now, locked_until=None)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": sa.case((expired, 1), else_=col(LoginThrottle.failures) + 1),
                "window_started_at": sa.case(
                    (expired, when), else_=col(LoginThrottle.window_started_at)
                ),
            },
        )
        .returning(col(LoginThrottle.failures))
    )
    failures = int(session.execute(statement).scalar_one())
    if failures < limit:
        return failures, None
    until = now + policy.lockout
    session.execute(
        sa.update(LoginThrottle)
        .where(col(LoginThrottle.key) == key)
        .values(failures=0, window_started_at=now, locked_until=until)
        .execution_options(synchronize_session=False)
    )
    return failures, until


def _previous_window(session: Session, key: str, now: datetime, policy: LoginPolicy) -> int:
    """The failures of ``key``'s window if it has ended (then a new one starts), else 0."""
    row = session.get(LoginThrottle, key)
    if row is None or row.window_started_at >= now - policy.window:
        return 0
    return row.failures


def _is_known_client(
    session: Session, username: str, address: str, now: datetime, policy: LoginPolicy
) -> bool:
    row = session.get(LoginThrottle, _known_key(username, address))
    return row is not None and row.window_started_at >= now - policy.known_client


def _upsert(session: Session, key: str, now: datetime) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginThrottle)
        .values(key=key, failures=0, window_started_at=now, locked_until=None)
        .on_conflict_do_update(index_elements=["key"], set_={"window_started_at": now})
    )


def clear_failures(session: Session, *, username: str, address: str | None = None) -> list[str]:
    """Lift the locks on a user name and on the addresses it failed from (the caller commits).

    ``address`` lifts that address's lock too. Returns the addresses unlocked.
    """
    name = username[:_NAME_LIMIT]
    prefix = f"pair:{name}|"
    pairs = session.exec(
        select(LoginThrottle.key).where(col(LoginThrottle.key).startswith(prefix, autoescape=True))
    ).all()
    addresses = [key.removeprefix(prefix) for key in pairs if key != f"{prefix}-"]
    if address:
        addresses.append(address[:64])
    keys = [user_key(name), *pairs, *(_ip_key(a) for a in addresses)]
    session.execute(
        sa.delete(LoginThrottle)
        .where(col(LoginThrottle.key).in_(keys))
        .execution_options(synchronize_session=False)
    )
    return sorted(set(addresses))


def _purge(session: Session, now: datetime, policy: LoginPolicy) -> None:
    """Forget counts whose window and lock have passed, and stale known clients."""
    stale = now - policy.window
    session.execute(
        sa.delete(LoginThrottle)
        .where(
            sa.or_(
                sa.and_(
                    ~col(LoginThrottle.key).startswith("ok:"),
                    col(LoginThrottle.window_started_at) < stale,
                    sa.or_(
                        col(LoginThrottle.locked_until).is_(None),
                        col(LoginThrottle.locked_until) < now,
                    ),
                ),
                sa.and_(
                    col(LoginThrottle.key).startswith("ok:"),
                    col(LoginThrottle.window_started_at) < now - policy.known_client,
                ),
            )
        )
        .execution_options(synchronize_session=False)
    )


def locked_detail(retry_after_s: int) -> str:
    """The 429's message: that logins are locked, and for how long."""
    if retry_after_s < 120:
        wait = f"{retry_after_s} seconds"
    else:
        wait = f"{math.ceil(retry_after_s / 60)} minutes"
    return f"{LOCKED_DETAIL}: try again in {wait}"


@dataclass
class LoginOutcome:
    """What a login attempt came to: a token, a lock (retry after), or a failure's delay."""

    token: str | None = None
    retry_after_s: int | None = None
    delay_s: float = 0.0
    must_change_password: bool = False
    #: The password was right but a second factor (``code``) is needed, or was wrong.
    mfa_required: bool = False
    #: The user's role requires a second factor they have not enrolled: the token may
    #: only enrol one.
    mfa_enrolment_required: bool = False
    #: The console's second step: the token :func:`complete_login` takes with the code.
    pending_token: str | None = None

    @property
    def locked_detail(self) -> str:
        """The 429's message for this outcome's lock."""
        return locked_detail(self.retry_after_s or 0)


def _count_login_failure(
    session: Session,
    policy: LoginPolicy,
    *,
    name: str,
    address: str | None,
    now: datetime,
    reason: str,
) -> LoginOutcome:
    """Count (and audit, once per window) a failed login; its outcome, not committed."""
    target = f"user:{name}"
    failures, lock = count_failure(
        session, user_key(name), now=now, policy=policy, limit=policy.max_failures
    )
    ip_lock = None
    if address:
        _, ip_lock = count_failure(
            session, _ip_key(address), now=now, policy=policy, limit=policy.ip_max_failures
        )
    pair = _pair_key(name, address)
    earlier = _previous_window(session, pair, now, policy)
    pair_failures, _ = count_failure(session, pair, now=now, policy=policy, limit=sys.maxsize)
    # Wrong second factors are always audited: whoever sent them knew the password.
    audited = pair_failures == 1 or reason != "bad_credentials"
    if audited or lock is not None or ip_lock is not None:
        details: dict[str, Any] = {
            "username": name,
            "reason": reason,
            "failures": failures,
            "window_s": int(policy.window.total_seconds()),
        }
        if earlier:
            details["failures_in_previous_window"] = earlier
        if lock is not None:
            details["locked_until"] = isoformat_z(lock)
        if ip_lock is not None:
            details["address_locked_until"] = isoformat_z(ip_lock)
        audit.record(
            session,
            actor=ANONYMOUS_ACTOR,
            action="login_failed",
            target=target,
            details=details,
            source_ip=address,
        )
    return LoginOutcome(delay_s=policy.delay_after(failures))


def attempt_login(
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    *,
    username: str,
    password: str,
    address: str | None,
    code: str | None = None,
    pending: bool = False,
) -> LoginOutcome:
    """Check a login against the locks, the password and the second factor; count failures.

    A user with two-factor login on needs ``code`` (a TOTP code or a recovery
    code, :mod:`server.mfa`) too: without it the outcome asks for it
    (``mfa_required``, nothing counted); a wrong one counts as a failed login
    (the same lock as wrong passwords). With ``pending`` (the console's two
    steps), a right password without ``code`` gives a short-lived token that
    only :func:`complete_login` accepts, with the code.

    A user name locks after a few failures from anywhere; an address after many,
    for any names, except for names that logged in from it before (a call center
    behind one NAT address is not locked out by one colleague's typos or by a
    guesser). Locked attempts are refused without checking the password and
    without an audit entry; failures are audited once per name and address per
    window (the entry of the next window says how many there were), and when a
    lock starts, so that no anonymous client can grow the audit log at will.
    """
    now = policy.clock()
    name = username[:_NAME_LIMIT]
    until = locked_until(session, [user_key(name)], now)
    if until is None and address is not None:
        address_until = locked_until(session, [_ip_key(address)], now)
        if address_until is not None and not _is_known_client(session, name, address, now, policy):
            until = address_until
    if until is not None:
        session.rollback()
        return LoginOutcome(retry_after_s=max(1, math.ceil((until - now).total_seconds())))
    try:
        user = crud.authenticate(session, username=username, password=password)
    except AuthError:
        outcome = _count_login_failure(
            session, policy, name=name, address=address, now=now, reason="bad_credentials"
        )
        session.commit()
        return outcome
    method = "password"
    if mfa.is_active(session, user):
        if not code:
            # The password was right: ask for the second factor (nothing counted).
            if not pending:
                session.rollback()
                return LoginOutcome(mfa_required=True)
            ttl = timedelta(seconds=MFA_PENDING_TTL_S)
            step, _ = crud.issue_token(session, user=user, kind=MFA_PENDING_KIND, ttl=ttl)
            session.commit()
            return LoginOutcome(mfa_required=True, pending_token=step)
        second = mfa.use_code(session, settings, user=user, code=code, now=now)
        if second is None:
            outcome = _count_login_failure(
                session, policy, name=name, address=address, now=now, reason="bad_second_factor"
            )
            outcome.mfa_required = True
            session.commit()
            return outcome
        method = f"password+{second}"
    return _succeed(session, settings, policy, user=user, address=address, now=now, method=method)


def _succeed(
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    *,
    user: User,
    address: str | None,
    now: datetime,
    method: str,
) -> LoginOutcome:
    """A login succeeded: clear the name's count, remember the client, issue the token."""
    counted = session.get(LoginThrottle, _pair_key(user.username, address))
    earlier_failures = counted.failures if counted is not None else 0
    session.execute(
        sa.delete(LoginThrottle)
        .where(
            col(LoginThrottle.key).in_([user_key(user.username), _pair_key(user.username, address)])
        )
        .execution_options(synchronize_session=False)
    )
    if address:
        _upsert(session, _known_key(user.username, address), now)
    _purge(session, now, policy)
    ttl = settings.access_token_ttl_s
    token, _ = crud.issue_token(session, user=user, kind="access", ttl=timedelta(seconds=ttl))
    details: dict[str, Any] = {"method": method}
    if earlier_failures:
        details["failures_before"] = earlier_failures
    audit.record(
        session,
        actor=user.username,
        action="login",
        target=f"user:{user.username}",
        details=details,
        source_ip=address,
    )
    session.commit()
    return LoginOutcome(
        token=token,
        must_change_password=user.must_change_password,
        mfa_enrolment_required=method == "password" and mfa.required_for(settings, user),
    )


def complete_login(
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    *,
    pending_token: str,
    code: str,
    address: str | None,
) -> LoginOutcome:
    """The console's second step: the token of :func:`attempt_login` (``pending``) and a code.

    A wrong code counts as a failed login (and locks the name like wrong
    passwords); the pending token ends on success, on its expiry, or when
    the name is locked. An unknown or expired pending token is an outcome
    with neither token nor ``mfa_required``: log in again.
    """
    now = policy.clock()
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(pending_token))
    ).first()
    if found is None:
        session.rollback()
        return LoginOutcome()
    row, user = found
    expired = row.expires_at is not None and row.expires_at <= now
    if row.kind != MFA_PENDING_KIND or row.revoked_at is not None or expired or user.disabled:
        session.rollback()
        return LoginOutcome()
    until = locked_until(session, [user_key(user.username)], now)
    if until is not None:
        row.revoked_at = now
        session.add(row)
        session.commit()
        return LoginOutcome(retry_after_s=max(1, math.ceil((until - now).total_seconds())))
    second = mfa.use_code(session, settings, user=user, code=code, now=now)
    if second is None:
        outcome = _count_login_failure(
            session,
            policy,
            name=user.username,
            address=address,
            now=now,
            reason="bad_second_factor",
        )
        outcome.mfa_required = True
        session.commit()
        return outcome
    row.revoked_at = now
    session.add(row)
    return _succeed(
        session,
        settings,
        policy,
        user=user,
        address=address,
        now=now,
        method=f"password+{second}",
    )
