"""The site's approval of sessions awaiting consent: approve, deny, follow, approval links.

``POST /api/v1/sessions/{id}/approve`` (optional body: narrower ``services``, a
shorter ``max_duration_s``) and ``POST /api/v1/sessions/{id}/deny`` (a ``reason``)
are for admins and ``site`` users of the device's customer
(:func:`server.sessions.approval.can_approve`): an operator gets 403, a site user
asking for another customer's session 404. The decision goes to the agent as a
signed ``session.decide``; the answer is the session once the agent took it (409
when it refused it: ``consent = "local"``, or no longer awaiting consent).
``GET /api/v1/sessions/{id}/approval`` lets an approver follow the session's state
(``wait_s``/``since`` as ``GET /api/v1/sessions/{id}``).

``POST /api/v1/sessions/{id}/approval-link`` (the session's operator or an admin)
makes a one-time link for a site contact with no account; its page is
:mod:`server.web.approval_link`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from sqlmodel import Session

from server.api.deps import CurrentUser, DbDep, OperatorUser, client_address
from server.api.routes.sessions import WaitQuery, followed, get_service, live_public
from server.models import (
    ApprovalLinkCreate,
    ApprovalLinkPublic,
    Device,
    RemoteSession,
    RemoteSessionPublic,
    SessionApprove,
    SessionDeny,
    User,
    role_at_least,
)
from server.sessions import approval
from server.sessions.repository import may_operate
from shared.errors import NotFound

router = APIRouter(tags=["sessions"])


def approvable(db: Session, session_id: str, user: User) -> RemoteSession:
    """The session ``user`` may decide on: 403 for a role that never approves, 404 for a
    session that does not exist or is not theirs to see."""
    if not role_at_least(user.role, "admin") and user.role != "site":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "approving a session needs the site or admin role"
        )
    row = db.get(RemoteSession, session_id)
    device = db.get(Device, row.device_id) if row is not None else None
    if row is None or device is None or not approval.can_approve(user, device):
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    return row


@router.post("/sessions/{session_id}/approve")
async def approve_session(
    session_id: str,
    db: DbDep,
    request: Request,
    user: CurrentUser,
    body: SessionApprove | None = None,
) -> RemoteSessionPublic:
    """Approve a session awaiting the site's consent (optionally narrower, shorter)."""
    approvable(db, session_id, user)
    db.commit()
    service = get_service(request)
    choice = body or SessionApprove()
    services = sorted(set(choice.services)) if choice.services is not None else None
    row = await approval.decide(
        service,
        session_id,
        approval.Decision(
            "approve",
            approver=user.username,
            services=services,
            max_duration_s=choice.max_duration_s,
        ),
        source_ip=client_address(request),
    )
    return live_public(row, service)


@router.post("/sessions/{session_id}/deny")
async def deny_session(
    session_id: str,
    db: DbDep,
    request: Request,
    user: CurrentUser,
    body: SessionDeny | None = None,
) -> RemoteSessionPublic:
    """Deny a session awaiting the site's consent: it never dials, and closes with the reason."""
    approvable(db, session_id, user)
    db.commit()
    service = get_service(request)
    row = await approval.decide(
        service,
        session_id,
        approval.Decision(
            "deny", approver=user.username, reason=(body or SessionDeny()).reason.strip()
        ),
        source_ip=client_address(request),
    )
    return live_public(row, service)


@router.get("/sessions/{session_id}/approval")
async def follow_approval(
    session_id: str,
    db: DbDep,
    request: Request,
    user: CurrentUser,
    wait_s: WaitQuery = 0,
    since: str | None = None,
) -> RemoteSessionPublic:
    """A session as its approver sees it; with ``wait_s``, first waits for it to leave
    ``since``."""
    return await followed(
        db, request, lambda: approvable(db, session_id, user), wait_s=wait_s, since=since
    )


@router.post("/sessions/{session_id}/approval-link", status_code=201)
def create_approval_link(
    session_id: str,
    db: DbDep,
    request: Request,
    user: OperatorUser,
    body: ApprovalLinkCreate | None = None,
) -> ApprovalLinkPublic:
    """A one-time link (expiring, single use) for a site contact to approve or deny the
    session; the URL carries the token, shown this once."""
    row = db.get(RemoteSession, session_id)
    if row is None:
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    if not may_operate(row, user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this session belongs to another operator")
    token, expires_at = approval.create_link(
        db,
        session_id,
        created_by=user.username,
        ttl_s=(body or ApprovalLinkCreate()).ttl_s,
        source_ip=client_address(request),
    )
    settings = request.app.state.settings
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return ApprovalLinkPublic(
        session_id=session_id, url=f"{base}/approve/{token}", expires_at=expires_at
    )
