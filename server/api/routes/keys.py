"""Operators' public keys for the SSH gateway: list, add, remove.

A user manages their own keys; an admin anyone's. Asking about another
user's keys without being an admin is 403 (whether or not that user exists).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field

from server.api.deps import OperatorUser, SessionDep, client_address
from server.api.responses import DB_INT_MAX
from server.gateway import keys
from server.models import User, UserSSHKey, role_at_least

router = APIRouter(prefix="/users", tags=["users"])


class SSHKeyCreate(BaseModel):
    """The body of ``POST /api/v1/users/{name}/keys``."""

    public_key: str = Field(
        min_length=1,
        max_length=keys.MAX_KEY_TEXT,
        description="one OpenSSH public key line, e.g. the contents of ~/.ssh/id_ed25519.pub",
    )
    name: str | None = Field(
        default=None, max_length=128, description="a label (default: the key's comment)"
    )


class SSHKeyPublic(BaseModel):
    """A registered key as the API shows it."""

    id: int
    username: str
    name: str
    key_type: str
    fingerprint: str
    public_key: str
    created_at: datetime
    last_used_at: datetime | None


class SSHKeysPublic(BaseModel):
    """A user's keys."""

    items: list[SSHKeyPublic]
    count: int


def _public(row: UserSSHKey, username: str) -> SSHKeyPublic:
    if row.id is None:  # pragma: no cover  (rows read back always have an id)
        msg = "key row without id"
        raise RuntimeError(msg)
    return SSHKeyPublic(
        id=row.id,
        username=username,
        name=row.name,
        key_type=row.public_key.split(" ", 1)[0],
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def _check_owner(user: User, name: str) -> None:
    if name != user.username and not role_at_least(user.role, "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only admins manage others' SSH keys")


@router.get("/{name}/keys")
def list_ssh_keys(name: str, session: SessionDep, user: OperatorUser) -> SSHKeysPublic:
    """A user's public keys for the SSH gateway (one's own, or anyone's as an admin)."""
    _check_owner(user, name)
    rows = keys.list_keys(session, username=name)
    return SSHKeysPublic(items=[_public(row, name) for row in rows], count=len(rows))


@router.post("/{name}/keys", status_code=status.HTTP_201_CREATED)
def add_ssh_key(
    name: str, body: SSHKeyCreate, request: Request, session: SessionDep, user: OperatorUser
) -> SSHKeyPublic:
    """Register a public key for the SSH gateway (``ssh -p 2222 DEVICE@server``)."""
    _check_owner(user, name)
    row = keys.add_key(
        session,
        username=name,
        public_key=body.public_key,
        name=body.name,
        actor=user.username,
        source_ip=client_address(request),
    )
    return _public(row, name)


@router.delete("/{name}/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_ssh_key(
    name: str,
    key_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    request: Request,
    session: SessionDep,
    user: OperatorUser,
) -> Response:
    """Remove one of a user's keys: the gateway refuses it from now on."""
    _check_owner(user, name)
    keys.remove_key(
        session,
        username=name,
        key=str(key_id),
        actor=user.username,
        source_ip=client_address(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
