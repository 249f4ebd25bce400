"""Long-lived API tokens for scripts: create (with the password again), list, revoke.

Every token is stored only as its hash and shown once; creating and revoking are audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from server import audit, crud
from server.api.deps import (
    CurrentUser,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    client_address,
    recheck_access,
)
from server.api.responses import DB_INT_MAX
from server.api.routes.auth import check_password_again, check_second_factor_again
from server.config import ServerSettings
from server.logins import LoginPolicy
from server.models import ApiToken, User, role_at_least
from shared.ids import isoformat_z, utcnow

router = APIRouter(prefix="/auth", tags=["auth"])


class ApiTokenCreate(BaseModel):
    """Body of ``POST /api/v1/auth/tokens``."""

    name: str = Field(min_length=1, max_length=128, description="what the token is for")
    password: str = Field(
        min_length=1,
        max_length=1024,
        description="the caller's password again: a login token alone cannot mint a token",
    )
    otp: str | None = Field(
        default=None,
        max_length=64,
        description="a current two-factor code (or a recovery code): required when the "
        "caller has two-factor login on",
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="at most the server's api_token_max_days (its default)",
    )


class ApiTokenPublic(BaseModel):
    """An API token as listed: never the token itself."""

    id: int
    name: str | None
    username: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreated(ApiTokenPublic):
    """A new API token: ``token`` is shown this once and stored only as its hash."""

    token: str


class ApiTokensPublic(BaseModel):
    """A page of API tokens and how many there are in all."""

    items: list[ApiTokenPublic]
    count: int


def _public(row: ApiToken, username: str) -> ApiTokenPublic:
    if row.id is None:  # pragma: no cover  (rows read back always have an id)
        msg = "token row without id"
        raise RuntimeError(msg)
    return ApiTokenPublic(
        id=row.id,
        name=row.name,
        username=username,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.post(
    "/tokens",
    status_code=201,
    responses={
        401: {
            "description": "not logged in, the password is wrong, or the two-factor code is "
            "missing (``X-Fieldlink-MFA: required``), wrong or spent"
        },
        422: {"description": "an expiry beyond api_token_max_days"},
        429: {"description": "too many wrong passwords or codes; see Retry-After"},
    },
)
def create_api_token(
    body: ApiTokenCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
) -> ApiTokenCreated:
    """Create a long-lived API token for the current user (shown once); needs the password
    and, for a user with two-factor login, a current code (``otp``)."""
    return mint_api_token(session, settings, policy, user, body, client_address(request))


def mint_api_token(
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    user: User,
    body: ApiTokenCreate,
    address: str | None,
) -> ApiTokenCreated:
    """Check the password (and the second factor) again, then issue and audit the token;
    for this route and the console's token page."""
    days = body.expires_in_days or settings.api_token_max_days
    if days > settings.api_token_max_days:
        raise HTTPException(
            status_code=422,
            detail=f"expires_in_days: at most {settings.api_token_max_days} on this server",
        )
    check_password_again(session, policy, user, body.password, address)
    second = check_second_factor_again(session, settings, policy, user, body.otp, address)
    ttl = timedelta(days=days)
    token, row = crud.issue_token(session, user=user, kind="api", ttl=ttl, name=body.name)
    audit.record(
        session,
        actor=user.username,
        action="token.create",
        target=f"token:{row.id}",
        details={
            "name": body.name,
            "owner": user.username,
            "expires_at": isoformat_z(row.expires_at) if row.expires_at else None,
        }
        | ({"second_factor": second} if second else {}),
        source_ip=address,
    )
    session.commit()
    return ApiTokenCreated(**_public(row, user.username).model_dump(), token=token)


@router.get("/tokens")
def list_api_tokens(
    session: SessionDep,
    user: CurrentUser,
    username: Annotated[
        str | None, Query(max_length=64, description="another user's (admins only)")
    ] = None,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> ApiTokensPublic:
    """The current user's API tokens (an admin may name another user), newest first."""
    owner = user
    if username is not None and username != user.username:
        if not role_at_least(user.role, "admin"):
            raise HTTPException(status_code=403, detail="only admins see others' tokens")
        found = crud.get_user(session, username=username)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no user {username!r}")
        owner = found
    where = sa.and_(col(ApiToken.user_id) == owner.id, col(ApiToken.kind) == "api")
    if not include_revoked:
        where = sa.and_(where, col(ApiToken.revoked_at).is_(None))
    total = session.exec(select(func.count()).select_from(ApiToken).where(where)).one()
    rows = session.exec(
        select(ApiToken).where(where).order_by(col(ApiToken.id).desc()).limit(limit).offset(offset)
    ).all()
    return ApiTokensPublic(items=[_public(row, owner.username) for row in rows], count=int(total))


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_api_token(
    token_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    request: Request,
    session: SessionDep,
    user: CurrentUser,
) -> Response:
    """Revoke a token: one's own, or any as an admin (404 for another's otherwise)."""
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.id == token_id)
    ).first()
    if found is None or (found[1].id != user.id and not role_at_least(user.role, "admin")):
        raise HTTPException(status_code=404, detail=f"no token {token_id}")
    row, owner = found
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        audit.record(
            session,
            actor=user.username,
            action="token.revoke",
            target=f"token:{token_id}",
            details={"name": row.name, "owner": owner.username, "kind": row.kind},
            source_ip=client_address(request),
        )
        session.commit()
        recheck_access(request)
    return Response(status_code=204)
