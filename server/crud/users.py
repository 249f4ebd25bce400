"""Users and their tokens: create, look up, authenticate, issue and check bearer tokens."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from server import audit
from server.crud.conflicts import conflict_on_duplicate
from server.crud.errors import InvalidInput
from server.models import ROLES, ApiToken, User
from server.security import hash_password, hash_token, new_bearer_token, verify_password
from shared.errors import AuthError
from shared.ids import utcnow


def create_user(
    session: Session,
    *,
    username: str,
    role: str,
    password: str,
    actor: str = audit.SYSTEM_ACTOR,
    customers: list[str] | None = None,
    regions: list[str] | None = None,
) -> User:
    """Create a user; the password is stored only as an argon2 hash.

    ``customers`` and ``regions`` limit what the user sees (:mod:`server.scope`); a
    ``site`` user needs at least one customer.

    Raises:
        InvalidInput: for an unknown role, a bad name, a too short password or a bad scope.
        Conflict: when the name is taken.
    """
    from server.scope import check_scope

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
    stored_customers, stored_regions = check_scope(
        session, role=role, customers=customers or [], regions=regions or []
    )
    user = User(
        username=username,
        role=role,
        password_hash=hash_password(password),
        customers=stored_customers,
        regions=stored_regions,
    )
    session.add(user)
    with conflict_on_duplicate(session, f"user {username!r} already exists"):
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="user.create",
            target=f"user:{username}",
            details={"role": role, **_scope_details(stored_customers, stored_regions)},
        )
        session.commit()
    session.refresh(user)
    return user


def _scope_details(customers: str | None, regions: str | None) -> dict[str, str]:
    return {k: v for k, v in (("customers", customers), ("regions", regions)) if v}


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
    if api_token.kind == "mfa_pending":
        return None  # between the password and the second factor: nothing yet
    if api_token.expires_at is not None and api_token.expires_at <= now:
        return None
    return user
