"""The audit log for administrators: filtered pages of entries, and a check of the hash chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from server import audit
from server.api.deps import AdminUser, SessionDep
from server.api.responses import DB_INT_MAX
from server.models import AuditEntriesPublic, AuditEntryPublic

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditVerifyPublic(BaseModel):
    """The result of walking the hash chain."""

    intact: bool
    entries: int
    broken_at: int | None
    reason: str | None
    message: str


@router.get("")
def list_audit_entries(
    session: SessionDep,
    _user: AdminUser,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="exact, or a prefix ending in '*'")
    ] = None,
    target: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[AwareDatetime | None, Query(description="inclusive")] = None,
    until: Annotated[AwareDatetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> AuditEntriesPublic:
    """Audit entries, newest first."""
    rows, total = audit.list_entries(
        session,
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return AuditEntriesPublic(
        items=[AuditEntryPublic.model_validate(row) for row in rows], count=total
    )


@router.get("/verify")
def verify_audit_log(session: SessionDep, _user: AdminUser) -> AuditVerifyPublic:
    """Walk the hash chain: intact, or the first broken entry and why."""
    result = audit.verify(session)
    return AuditVerifyPublic(
        intact=result.intact,
        entries=result.entries,
        broken_at=result.broken_at,
        reason=result.reason,
        message=result.describe(),
    )
