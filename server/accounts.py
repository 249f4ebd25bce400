"""Accounts after creation: list, disable, enable, change role, remove, passwords.

Keyword-only database operations shared by the API, the console and the
administrative CLI; each is audited in the same transaction. Disabling,
demoting below operator, removing and resetting a password revoke the user's
tokens; live sessions and channels that depended on them end within seconds
(:mod:`server.sessions.access`). The last enabled administrator cannot be
disabled, demoted or removed: someone must be able to administer the server.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from server import audit
from server.crud import InvalidInput, get_user
from server.models import BOUND_ROLES, ROLES, ApiToken, MfaRecoveryCode, User, UserMfa, UserSSHKey
from server.security import hash_password, hash_token
from shared.errors import Conflict, NotFound
from shared.ids import new_token, utcnow

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def check_password(password: str) -> None:
    """Raise :class:`InvalidInput` unless ``password`` is acceptable as a new password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        msg = f"passwords need at least {MIN_PASSWORD_LENGTH} characters"
        raise InvalidInput(msg)
    if len(password) > MAX_PASSWORD_LENGTH:
        msg = f"passwords have at most {MAX_PASSWORD_LENGTH} characters"
        raise InvalidInput(msg)


def list_users(session: Session, *, limit: int = 100, offset: int = 0) -> tuple[list[User], int]:
    """Users by name, and how many there are."""
    total = session.exec(select(func.count()).select_from(User)).one()
    rows = session.exec(select(User).order_by(col(User.username)).limit(limit).offset(offset)).all()
    return list(rows), int(total)


def get_user_or_404(session: Session, *, username: str) -> User:
    """The user of that name.

    Raises:
        NotFound: there is none.
    """
    return _require(session, username)


def _require(session: Session, username: str) -> User:
    user = get_user(session, username=username)
    if user is None:
        msg = f"no user {username!r}"
        raise NotFound(msg)
    return user


def _other_admins(session: Session, user: User) -> int:
    return int(
        session.exec(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", col(User.disabled).is_(False), User.id != user.id)
        ).one()
    )


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    if user.role == "admin" and not user.disabled and _other_admins(session, user) == 0:
        msg = f"cannot {what} {user.username}: the last enabled administrator"
        raise Conflict(msg)


def revoke_tokens(session: Session, *, user: User, keep_hash: str | None = None) -> int:
    """Revoke every live token of ``user`` (but the one hashed ``keep_hash``); how many."""
    where = sa.and_(col(ApiToken.user_id) == user.id, col(ApiToken.revoked_at).is_(None))
    if keep_hash is not None:
        where = sa.and_(where, col(ApiToken.token_hash) != keep_hash)
    result = session.execute(
        sa.update(ApiToken)
        .where(where)
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def log_out(
    session: Session, *, user: User, row: ApiToken, source_ip: str | None, method: str | None = None
) -> bool:
    """Revoke ``user``'s token ``row`` at their logout, audited as ``logout`` (``method``:
    how, when not the API) and committed; ``False`` when it was revoked already."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    details: dict[str, str] = {"kind": row.kind}
    if method is not None:
        details["method"] = method
    audit.record(
        session,
        actor=user.username,
        action="logout",
        target=f"token:{row.id}",
        details=details,
        source_ip=source_ip,
    )
    session.commit()
    return True


def set_language(session: Session, *, user: User, language: str | None) -> None:
    """Keep ``user``'s console language (``None``: the browser's), audited as
    ``user.preferences`` and committed."""
    user.language = language
    session.add(user)
    audit.record(
        session,
        actor=user.username,
        action="user.preferences",
        target=f"user:{user.username}",
        details={"language": language},
    )
    session.commit()


def set_disabled(
    session: Session,
    *,
    username: str,
    disabled: bool,
    actor: str,
    source_ip: str | None = None,
) -> User:
    """Disable (revoking their tokens) or enable a user."""
    user = _require(session, username)
    if disabled:
        if actor == user.username:
            msg = "you cannot disable yourself"
            raise Conflict(msg)
        _keep_an_admin(session, user, "disable")
    if user.disabled == disabled:
        return user
    user.disabled = disabled
    session.add(user)
    revoked = revoke_tokens(session, user=user) if disabled else 0
    audit.record(
        session,
        actor=actor,
        action="user.disable" if disabled else "user.enable",
        target=f"user:{user.username}",
        details={"tokens_revoked": revoked} if disabled else None,
        source_ip=source_ip,
    )
    session.commit()
    session.refresh(user)
    return user


def set_role(
    session: Session, *, username: str, role: str, actor: str, source_ip: str | None = None
) -> User:
    """Change a user's role."""
    if role not in ROLES:
        msg = f"unknown role {role!r}: use one of {', '.join(ROLES)}"
        raise InvalidInput(msg)
    user = _require(session, username)
    if user.role == role:
        return user
    if user.role == "admin":
        if actor == user.username:
            msg = "you cannot change your own role"
            raise Conflict(msg)
        _keep_an_admin(session, user, "demote")
    if role == "admin" and (user.customers or user.regions):
        from server.scope import ADMIN_UNSCOPED

        msg = f"{ADMIN_UNSCOPED} (lift {user.username}'s scope first: user scope --clear)"
        raise InvalidInput(msg)
    if role in BOUND_ROLES and not user.customers:
        msg = f"a {role} user must be bound to at least one customer: set their scope first"
        raise InvalidInput(msg)
    previous, user.role = user.role, role
    session.add(user)
    audit.record(
        session,
        actor=actor,
        action="user.role",
        target=f"user:{user.username}",
        details={"from": previous, "to": role},
        source_ip=source_ip,
    )
    session.commit()
    session.refresh(user)
    return user


def set_scope(
    session: Session,
    *,
    username: str,
    customers: list[str],
    regions: list[str],
    actor: str,
    source_ip: str | None = None,
) -> User:
    """Limit what a user sees to ``customers`` and ``regions`` (both empty: everything).

    Raises:
        InvalidInput: an unknown customer, a bad region, or a ``site`` user left unbound.
        NotFound: no such user.
    """
    from server.scope import check_scope

    user = _require(session, username)
    stored = check_scope(session, role=user.role, customers=customers, regions=regions)
    previous = (user.customers, user.regions)
    if stored == previous:
        return user
    user.customers, user.regions = stored
    session.add(user)
    audit.record(
        session,
        actor=actor,
        action="user.scope",
        target=f"user:{user.username}",
        details={
            "from": {"customers": previous[0], "regions": previous[1]},
            "to": {"customers": stored[0], "regions": stored[1]},
        },
        source_ip=source_ip,
    )
    session.commit()
    session.refresh(user)
    return user


def remove_user(
    session: Session, *, username: str, actor: str, source_ip: str | None = None
) -> None:
    """Remove a user, their tokens and SSH keys (the audit log keeps their name)."""
    user = _require(session, username)
    if actor == user.username:
        msg = "you cannot remove yourself"
        raise Conflict(msg)
    _keep_an_admin(session, user, "remove")
    tokens = session.execute(
        sa.delete(ApiToken)
        .where(col(ApiToken.user_id) == user.id)
        .execution_options(synchronize_session=False)
    )
    keys = session.execute(
        sa.delete(UserSSHKey)
        .where(col(UserSSHKey.user_id) == user.id)
        .execution_options(synchronize_session=False)
    )
    for table in (MfaRecoveryCode, UserMfa):
        session.execute(
            sa.delete(table)
            .where(col(table.user_id) == user.id)
            .execution_options(synchronize_session=False)
        )
    session.delete(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.remove",
        target=f"user:{username}",
        details={
            "role": user.role,
            "tokens": int(getattr(tokens, "rowcount", 0) or 0),
            "ssh_keys": int(getattr(keys, "rowcount", 0) or 0),
        },
        source_ip=source_ip,
    )
    session.commit()


def change_password(
    session: Session,
    *,
    user: User,
    current: str,
    new: str,
    keep_token: str | None = None,
    source_ip: str | None = None,
) -> int:
    """Change one's own password; the user's other login tokens are revoked (how many).

    The caller has checked ``current`` already, through the login throttle
    (:func:`server.api.routes.auth.check_password_again`, which counts a wrong one
    and locks), so it is not hashed a second time here.

    Raises:
        InvalidInput: the new password is not acceptable (or is the current one).
    """
    check_password(new)
    if new == current:
        msg = "the new password must differ from the current one"
        raise InvalidInput(msg)
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_changed_at = utcnow()
    session.add(user)
    keep = hash_token(keep_token) if keep_token else None
    revoked = session.execute(
        sa.update(ApiToken)
        .where(
            col(ApiToken.user_id) == user.id,
            col(ApiToken.kind) == "access",
            col(ApiToken.revoked_at).is_(None),
            col(ApiToken.token_hash) != (keep or ""),
        )
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(revoked, "rowcount", 0) or 0)
    audit.record(
        session,
        actor=user.username,
        action="user.password_change",
        target=f"user:{user.username}",
        details={"logins_revoked": count},
        source_ip=source_ip,
    )
    session.commit()
    return count


def reset_password(
    session: Session, *, username: str, actor: str, source_ip: str | None = None
) -> str:
    """Give a user a one-time password that must be changed at the next login.

    Every token of theirs is revoked. Returns the one-time password (shown once).
    """
    user = _require(session, username)
    temporary = new_token(18)
    user.password_hash = hash_password(temporary)
    user.must_change_password = True
    user.password_changed_at = utcnow()
    session.add(user)
    revoked = revoke_tokens(session, user=user)
    audit.record(
        session,
        actor=actor,
        action="user.password_reset",
        target=f"user:{user.username}",
        details={"tokens_revoked": revoked},
        source_ip=source_ip,
    )
    session.commit()
    return temporary
