"""Administrators manage users: list, disable or enable, change a role, remove, reset a
password or a two-factor login.

Every change is audited; disabling, demoting and removing end the user's live
sessions and channels within seconds (``access_revoked``), this process's at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlmodel import Session

from server import accounts, mfa
from server.api.deps import AdminUser, SessionDep, client_address, recheck_access
from server.models import BOUND_ROLES, User, UserPublic, UsersPublic
from server.scope import parse_list, split

router = APIRouter(prefix="/users", tags=["users"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such user"},
    409: {"description": "oneself, or the last enabled administrator"},
}


class UserUpdate(BaseModel):
    """Body of ``PATCH /api/v1/users/{name}``: what to change."""

    role: Literal["site", "operator", "manager", "admin"] | None = None
    disabled: bool | None = None
    #: The user's scope (customer numbers, regions): ``[]`` lifts that limit; a site
    #: user keeps at least one customer. Left out: unchanged.
    customers: list[Annotated[str, Field(max_length=32)]] | None = Field(
        default=None, max_length=64
    )
    regions: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=64)


class PasswordReset(BaseModel):
    """A one-time password: the user must choose a new one at the next login."""

    username: str
    temporary_password: str = Field(description="shown once; give it to the user privately")


@router.get("")
def list_users(
    session: SessionDep,
    _admin: AdminUser,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> UsersPublic:
    """Users by name."""
    rows, count = accounts.list_users(session, limit=limit, offset=offset)
    with_mfa = mfa.active_user_ids(session, [row.id for row in rows if row.id is not None])
    items = [
        UserPublic.model_validate(row).model_copy(update={"mfa_enabled": row.id in with_mfa})
        for row in rows
    ]
    return UsersPublic(items=items, count=count)


@router.patch("/{username}", responses=_ERRORS)
async def update_user(
    username: str,
    body: UserUpdate,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
) -> UserPublic:
    """Change a user's role or scope, or disable (revoking their tokens) or enable them."""
    address = client_address(request)
    user = None
    scope_first = body.role in BOUND_ROLES or body.role == "admin"  # bound, or lifted
    if scope_first:
        user = await _set_scope(session, username, body, admin.username, address)
    if body.role is not None:
        user = await run_in_threadpool(
            accounts.set_role,
            session,
            username=username,
            role=body.role,
            actor=admin.username,
            source_ip=address,
        )
    if not scope_first:
        user = await _set_scope(session, username, body, admin.username, address) or user
    if body.disabled is not None:
        user = await run_in_threadpool(
            accounts.set_disabled,
            session,
            username=username,
            disabled=body.disabled,
            actor=admin.username,
            source_ip=address,
        )
    if user is None:
        user = await run_in_threadpool(accounts.get_user_or_404, session, username=username)
    recheck_access(request)
    return UserPublic.model_validate(user).model_copy(
        update={"mfa_enabled": mfa.is_active(session, user)}
    )


async def _set_scope(
    session: Session, username: str, body: UserUpdate, actor: str, address: str | None
) -> User | None:
    if body.customers is None and body.regions is None:
        return None
    user = await run_in_threadpool(accounts.get_user_or_404, session, username=username)
    return await run_in_threadpool(
        accounts.set_scope,
        session,
        username=username,
        customers=parse_list(body.customers)
        if body.customers is not None
        else split(user.customers),
        regions=parse_list(body.regions) if body.regions is not None else split(user.regions),
        actor=actor,
        source_ip=address,
    )


@router.delete("/{username}", status_code=204, responses=_ERRORS)
async def remove_user(
    username: str, request: Request, session: SessionDep, admin: AdminUser
) -> Response:
    """Remove a user with their tokens and SSH keys (the audit log keeps the name)."""
    await run_in_threadpool(
        accounts.remove_user,
        session,
        username=username,
        actor=admin.username,
        source_ip=client_address(request),
    )
    recheck_access(request)
    return Response(status_code=204)


@router.post("/{username}/password-reset", responses=_ERRORS)
async def reset_password(
    username: str, request: Request, session: SessionDep, admin: AdminUser
) -> PasswordReset:
    """Give a user a one-time password to change at the next login; their tokens end."""
    temporary = await run_in_threadpool(
        accounts.reset_password,
        session,
        username=username,
        actor=admin.username,
        source_ip=client_address(request),
    )
    recheck_access(request)
    return PasswordReset(username=username, temporary_password=temporary)


@router.delete("/{username}/mfa", status_code=204, responses={404: {"description": "no such user"}})
async def reset_mfa(
    username: str, request: Request, session: SessionDep, admin: AdminUser
) -> Response:
    """Remove a user's two-factor login (a lost phone): they log in with the password
    next, and enrol again (at once, if their role requires it). Audited."""
    await run_in_threadpool(
        mfa.reset,
        session,
        username=username,
        actor=admin.username,
        source_ip=client_address(request),
    )
    return Response(status_code=204)
