"""Log in and out, change one's password: the API's side of :mod:`server.logins`.

The password flow gives a short-lived bearer token; failed logins are counted,
slowed down and locked as :mod:`server.logins` describes, answered with 429, how
long in the message and ``Retry-After``. Long-lived API tokens for scripts are
in :mod:`server.api.routes.tokens`.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from server import accounts, audit
from server.api.deps import (
    SESSION_COOKIE,
    CurrentUser,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    TokenDep,
    client_address,
    recheck_access,
)
from server.logins import (
    LoginPolicy,
    attempt_login,
    count_failure,
    locked_detail,
    locked_until,
    user_key,
)
from server.models import ApiToken, User, UserPublic
from server.security import hash_token, verify_password
from shared.ids import isoformat_z, utcnow

router = APIRouter(prefix="/auth", tags=["auth"])


class Token(BaseModel):
    """A bearer token and how long it lives."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int
    #: An administrator reset the password: this token may only change it.
    password_change_required: bool = False


@router.post(
    "/token",
    responses={
        401: {"description": "wrong user name or password"},
        429: {"description": "too many failed logins; see Retry-After"},
    },
)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a short-lived bearer token."""
    outcome = await run_in_threadpool(
        attempt_login,
        session,
        settings,
        policy,
        username=form.username,
        password=form.password,
        address=client_address(request),
    )
    if outcome.retry_after_s is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=outcome.locked_detail,
            headers={"Retry-After": str(outcome.retry_after_s)},
        )
    if outcome.token is None:
        if outcome.delay_s > 0:
            await policy.sleep(outcome.delay_s)
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Token(
        access_token=outcome.token,
        expires_in=settings.access_token_ttl_s,
        password_change_required=outcome.must_change_password,
    )


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    """The user the bearer token belongs to."""
    return UserPublic.model_validate(user)


@router.post("/logout", status_code=204)
def logout(request: Request, session: SessionDep, user: CurrentUser, token: TokenDep) -> Response:
    """Revoke the bearer token that came with this request."""
    row = session.exec(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token or ""))
    ).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        audit.record(
            session,
            actor=user.username,
            action="logout",
            target=f"token:{row.id}",
            details={"kind": row.kind},
            source_ip=client_address(request),
        )
        session.commit()
        recheck_access(request)
    return Response(status_code=204)


class PasswordChange(BaseModel):
    """Body of ``POST /api/v1/auth/password``."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post(
    "/password",
    status_code=204,
    responses={
        401: {"description": "not logged in, or the current password is wrong"},
        422: {"description": "the new password is not acceptable"},
        429: {"description": "too many wrong passwords; see Retry-After"},
    },
)
def change_password(
    body: PasswordChange,
    request: Request,
    session: SessionDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
    token: TokenDep,
) -> Response:
    """Change one's own password; one's other logins end (API tokens stay)."""
    address = client_address(request)
    check_password_again(session, policy, user, body.current_password, address)
    presented = token or request.cookies.get(SESSION_COOKIE)
    accounts.change_password(
        session,
        user=user,
        current=body.current_password,
        new=body.new_password,
        keep_token=presented,
        source_ip=address,
    )
    recheck_access(request)
    return Response(status_code=204)


def check_password_again(
    session: Session, policy: LoginPolicy, user: User, password: str, address: str | None
) -> None:
    """401 (counted like a failed login, 429 once locked) unless ``password`` is the user's."""
    now = policy.clock()
    until = locked_until(session, [user_key(user.username)], now)
    if until is not None:
        retry = max(1, math.ceil((until - now).total_seconds()))
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=locked_detail(retry),
            headers={"Retry-After": str(retry)},
        )
    if not verify_password(password, user.password_hash):
        failures, lock = count_failure(
            session, user_key(user.username), now=now, policy=policy, limit=policy.max_failures
        )
        audit.record(
            session,
            actor=user.username,
            action="password_check_failed",
            target=f"user:{user.username}",
            details={"failures": failures}
            | ({"locked_until": isoformat_z(lock)} if lock is not None else {}),
            source_ip=address,
        )
        session.commit()
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="the password is wrong"
        )
