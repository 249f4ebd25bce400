"""The administrators' pages: users and roles with their SSH keys, devices and
enrollment tokens, revocation, and the audit log with its verification.

Device registration, enrollment tokens, revocation, SSH keys and the audit
check go through ``/api/v1`` from the page's script. Users are changed by
plain form posts here (CSRF-checked), through :mod:`server.accounts` like
``/api/v1/users``: audited, and what a disabled or demoted user had open ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from server import accounts, audit, crud, mfa
from server.api.deps import SessionDep, checked_form, client_address, recheck_access
from server.crud import InvalidInput
from server.models import BOUND_ROLES, ROLES, AuditEntryPublic, Device, User, UserSSHKey
from server.scope import parse_list, split
from server.web.auth import Viewer, ViewerDep, forbidden
from server.web.templating import gettext, render
from server.web.texts import N_
from shared.errors import Conflict, NotFound

_T = TypeVar("_T")

router = APIRouter(prefix="/admin", include_in_schema=False)

DEVICES_PAGE = 50
AUDIT_PAGE = 50


def _users(session: Session) -> tuple[list[User], dict[int, list[UserSSHKey]]]:
    users = list(session.exec(select(User).order_by(col(User.username))).all())
    keys: dict[int, list[UserSSHKey]] = defaultdict(list)
    for key in session.exec(select(UserSSHKey).order_by(col(UserSSHKey.id))).all():
        keys[key.user_id].append(key)
    return users, keys


#: What the users page says after an action (``/admin?done=<key>&user=<name>``): texts of
#: the catalogs, composed as the page renders, in the viewer's language.
DONE_TEXTS: dict[str, str] = {
    "added": N_("User %(user)s added."),
    "updated": N_("User %(user)s updated."),
    "unchanged": N_("User %(user)s: nothing changed."),
    "removed": N_("User %(user)s removed."),
    "no-mfa": N_("%(user)s had no two-factor login."),
    "mfa-reset": N_("Two-factor login of %(user)s removed: they enrol again."),
}
_ONE_TIME_PASSWORD = N_(
    "One-time password for %(user)s: %(password)s (they must choose a new one when they log in)."
)


def _users_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    *,
    error: str | None = None,
    done: str | None = None,
    done_args: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    users, keys = _users(session)
    with_mfa = mfa.active_user_ids(session, [u.id for u in users if u.id is not None])
    return render(
        request,
        "admin_users.html",
        {
            "viewer": viewer,
            "title": "Admin: users",
            "tr": gettext,
            "nav": "admin",
            "tab": "users",
            "users": users,
            "keys": keys,
            "with_mfa": with_mfa,
            "roles": ROLES,
            "error": error,
            "done": done,
            "done_args": done_args or {},
        },
        status_code=status_code,
    )


@router.get("", response_class=HTMLResponse)
def users_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
    user: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    """Users and roles, and each user's SSH keys for the gateway."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    text = DONE_TEXTS.get(done or "")
    return _users_page(request, session, viewer, done=text, done_args={"user": user})


async def _checked_form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token is checked (403 otherwise)."""
    form = await checked_form(request)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _back(done: str, user: str) -> RedirectResponse:
    """Back to the users page, which says what was done (a key of :data:`DONE_TEXTS`)."""
    return RedirectResponse(
        f"/admin?{urlencode({'done': done, 'user': user})}", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/users", response_class=HTMLResponse)
async def create_user(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """Add a user with a role and an initial password (audited)."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    form = await _checked_form(request)
    username = form.get("username", "").strip()
    try:
        await run_in_threadpool(
            crud.create_user,
            session,
            username=username,
            role=form.get("role", ""),
            password=form.get("password", ""),
            actor=viewer.user.username,
            customers=parse_list(form.get("customers")),
            regions=parse_list(form.get("regions")),
        )
    except (InvalidInput, Conflict) as exc:
        return _users_page(request, session, viewer, error=str(exc), status_code=422)
    return _back("added", username)


def _update_user(
    session: Session, viewer: Viewer, name: str, form: dict[str, str], ip: str | None
) -> str:
    user = crud.get_user(session, username=name)
    if user is None:
        msg = f"no user {name!r}"
        raise InvalidInput(msg)
    role = form.get("role", user.role)
    if role not in ROLES:
        msg = f"unknown role {role!r}: use one of {', '.join(ROLES)}"
        raise InvalidInput(msg)
    disabled = form.get("disabled", "no") == "yes"
    if user.id == viewer.user.id and (role != user.role or disabled):
        msg = "you cannot change your own role or disable yourself"
        raise InvalidInput(msg)
    scope = (
        parse_list(form.get("customers", user.customers)),
        parse_list(form.get("regions", user.regions)),
    )
    same_scope = scope == (split(user.customers), split(user.regions))
    if role == user.role and disabled == user.disabled and same_scope:
        return "unchanged"
    actor = viewer.user.username
    try:
        # A site user is bound to customers before the role is given, and keeps them
        # until the role is taken away.
        scope_first = role in BOUND_ROLES
        if scope_first and not same_scope:
            _set_scope(session, name, scope, actor, ip)
        if role != user.role:
            accounts.set_role(session, username=name, role=role, actor=actor, source_ip=ip)
        if not scope_first and not same_scope:
            _set_scope(session, name, scope, actor, ip)
        if disabled != user.disabled:
            accounts.set_disabled(
                session, username=name, disabled=disabled, actor=actor, source_ip=ip
            )
    except (Conflict, NotFound) as exc:
        raise InvalidInput(str(exc)) from exc
    return "updated"


def _set_scope(
    session: Session, name: str, scope: tuple[list[str], list[str]], actor: str, ip: str | None
) -> None:
    customers, regions = scope
    accounts.set_scope(
        session, username=name, customers=customers, regions=regions, actor=actor, source_ip=ip
    )


@router.post("/users/{name}", response_class=HTMLResponse)
async def update_user(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Change a user's role, or disable or enable them (audited)."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    form = await _checked_form(request)
    try:
        done = await run_in_threadpool(
            _update_user, session, viewer, name, form, client_address(request)
        )
    except InvalidInput as exc:
        return _users_page(request, session, viewer, error=str(exc), status_code=422)
    recheck_access(request)
    return _back(done, name)


async def _change_user(
    name: str,
    request: Request,
    session: Session,
    viewer: Viewer,
    change: Callable[..., _T],
) -> _T | HTMLResponse:
    """``change(session, username=name, actor=..., source_ip=...)`` for an admin's CSRF-checked
    form; the page to answer instead where the viewer may not or the change fails."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    await _checked_form(request)
    try:
        done: _T = await run_in_threadpool(
            change,
            session,
            username=name,
            actor=viewer.user.username,
            source_ip=client_address(request),
        )
    except (Conflict, NotFound) as exc:
        return _users_page(request, session, viewer, error=str(exc), status_code=422)
    return done


@router.post("/users/{name}/remove", response_class=HTMLResponse)
async def remove_user(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Remove a user with their tokens and SSH keys (audited)."""
    refused = await _change_user(name, request, session, viewer, accounts.remove_user)
    if isinstance(refused, Response):
        return refused
    recheck_access(request)
    return _back("removed", name)


@router.post("/users/{name}/password-reset", response_class=HTMLResponse)
async def reset_password(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Give a user a one-time password, shown once on this page (audited, never logged)."""
    temporary = await _change_user(name, request, session, viewer, accounts.reset_password)
    if isinstance(temporary, Response):
        return temporary
    recheck_access(request)
    # Shown in the page (never in a redirect's URL, which would reach logs and history).
    return _users_page(
        request,
        session,
        viewer,
        done=_ONE_TIME_PASSWORD,
        done_args={"user": name, "password": temporary},
    )


@router.post("/users/{name}/mfa-reset", response_class=HTMLResponse)
async def reset_mfa(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Remove a user's two-factor login (a lost phone; audited): they log in with the
    password next and enrol again (at once where their role requires it)."""
    had = await _change_user(name, request, session, viewer, mfa.reset)
    if isinstance(had, Response):
        return had
    if not had:
        return _back("no-mfa", name)
    return _back("mfa-reset", name)


@router.get("/devices", response_class=HTMLResponse)
def devices_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    q: Annotated[str | None, Query(max_length=128)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Devices: register one (with its enrollment token), new tokens, revocation."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    rows, total = crud.list_devices(
        session, q=q or None, limit=DEVICES_PAGE, offset=(page - 1) * DEVICES_PAGE
    )
    # What "watched via" may name: devices with an agent of their own, not revoked.
    gateways = session.exec(
        select(Device.id)
        .where(col(Device.via).is_(None), col(Device.revoked_at).is_(None))
        .order_by(col(Device.id))
        .limit(500)
    ).all()
    return render(
        request,
        "admin_devices.html",
        {
            "viewer": viewer,
            "title": "Admin: devices",
            "nav": "admin",
            "tab": "devices",
            "devices": rows,
            "total": total,
            "q": q or "",
            "page": page,
            "pages": max(1, -(-total // DEVICES_PAGE)),
            "device_types": ("mfp", "imaging", "server"),
            "gateways": gateways,
        },
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The audit log, newest first, and a button that verifies its hash chain."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    rows, total = audit.list_entries(
        session,
        actor=actor or None,
        action=action or None,
        limit=AUDIT_PAGE,
        offset=(page - 1) * AUDIT_PAGE,
    )
    query = urlencode({k: v for k, v in {"actor": actor, "action": action}.items() if v})
    return render(
        request,
        "admin_audit.html",
        {
            "viewer": viewer,
            "title": "Admin: audit log",
            "nav": "admin",
            "tab": "audit",
            "entries": [AuditEntryPublic.model_validate(row) for row in rows],
            "total": total,
            "actor": actor or "",
            "action": action or "",
            "page": page,
            "pages": max(1, -(-total // AUDIT_PAGE)),
            "query": query,
        },
    )
