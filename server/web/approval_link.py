"""The page of a one-time approval link: a site contact with no account approves or denies.

``GET /approve/{token}`` shows the session the link names (the device, the
operator, the reason, the services asked for) with Approve and Deny; ``POST``
decides (the form's ``decision``, the contact's ``name`` and a denial's
``reason``). The token is the credential (no cookie, so no CSRF token): it is
claimed once before the decision is sent, so a second use, an expired link, or a
link whose session is past consent gets a page that says so and changes nothing
(audited as ``session.approval_link.refused``). The access log redacts the token
(:mod:`server.access_log`) and the page sends no ``Referer``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from server.api.deps import SessionDep, client_address
from server.sessions import approval
from server.sessions.service import SessionService
from server.web.templating import render
from server.web.texts import N_, SESSION_STATE_NAMES
from shared.errors import FieldlinkError

router = APIRouter(include_in_schema=False)

#: Why a link serves no more, for the person holding it.
PROBLEMS = {
    "unknown": N_("This approval link is not valid."),
    "used": N_("This approval link has been used already: it works only once."),
    "expired": N_("This approval link has expired."),
    "decided": N_("This session no longer waits for approval."),
}
_STATUS = {
    "unknown": status.HTTP_404_NOT_FOUND,
    "used": status.HTTP_410_GONE,
    "expired": status.HTTP_410_GONE,
    "decided": status.HTTP_409_CONFLICT,
}
_TOKEN = Annotated[str, "the link's token"]


def _page(
    request: Request, view: approval.LinkView, status_code: int = 200, **context: Any
) -> HTMLResponse:
    response = render(
        request,
        "approval_link.html",
        {
            "viewer": None,
            "title": N_("Approve a remote session"),
            "view": view,
            "problem": PROBLEMS.get(view.problem or ""),
            "state_names": SESSION_STATE_NAMES,
            **context,
        },
        status_code=status_code,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/approve/{token}", response_class=HTMLResponse)
def approval_page(token: _TOKEN, request: Request, db: SessionDep) -> HTMLResponse:
    """The session a link names, with Approve and Deny (or why the link serves no more)."""
    view = approval.view_link(db, token[:256])
    code = _STATUS[view.problem] if view.problem else status.HTTP_200_OK
    return _page(request, view, code)


@router.post("/approve/{token}", response_class=HTMLResponse)
async def approval_decision(
    token: _TOKEN,
    request: Request,
    db: SessionDep,
    decision: Annotated[str, Form(max_length=8)],
    name: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=1024)] = "",
) -> HTMLResponse:
    """Approve or deny the link's session, once."""
    address = client_address(request)
    view = await run_in_threadpool(approval.view_link, db, token[:256])
    if decision not in ("approve", "deny"):
        return _page(
            request,
            view,
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            notice=N_("Choose Approve or Deny."),
        )
    link = view.link
    if view.problem is not None or link is None or link.id is None:
        await run_in_threadpool(approval.audit_link_refused, db, view, address)
        return _page(request, view, _STATUS[view.problem or "unknown"])
    if not await run_in_threadpool(approval.claim_link, db, link.id, decision):
        db.expire_all()
        view = await run_in_threadpool(approval.view_link, db, token[:256])
        await run_in_threadpool(approval.audit_link_refused, db, view, address)
        return _page(request, view, _STATUS[view.problem or "used"])
    service: SessionService | None = getattr(request.app.state, "sessions", None)
    contact = " ".join(name.split()) or "a site contact"
    choice = approval.Decision(
        "approve" if decision == "approve" else "deny",
        approver=f"{contact} (link from {link.created_by})",
        via="link",
        reason=reason.strip(),
        audit={"link_id": link.id, "link_created_by": link.created_by},
    )
    try:
        if service is None:
            msg = "remote sessions are not available on this server"
            raise approval.DecisionRefused(msg)
        row = await approval.decide(service, link.session_id, choice, source_ip=address)
    except FieldlinkError as exc:
        return _page(request, view, status.HTTP_409_CONFLICT, error=str(exc))
    return _page(request, view, done=decision, session=row)
