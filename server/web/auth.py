"""Console log-in and log-out, and who is looking at a page.

Logging in runs the API's password flow (the same throttling, lockout and
audit) and keeps the short-lived access token in an HttpOnly cookie
(:mod:`server.api.deps`); logging out revokes it. A page asked for without a
live session redirects to the log-in form; a page above the user's role
answers 403 with a page that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select

from server import audit, crud
from server.api.deps import (
    SESSION_COOKIE,
    SessionDep,
    SettingsDep,
    check_csrf,
    clear_session_cookie,
    csrf_token_for,
    same_origin,
    set_session_cookie,
)
from server.api.routes.auth import LoginPolicy, client_address, login_policy, recheck_access
from server.api.routes.auth import _attempt_login as attempt_login
from server.models import ApiToken, User, role_at_least
from server.security import hash_token
from server.web.templating import render
from shared.ids import utcnow

router = APIRouter(include_in_schema=False)


class ConsoleRedirect(Exception):
    """Send the browser elsewhere (the log-in form, mostly)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


async def redirect_to(_request: Request, exc: Exception) -> Response:
    """The exception handler of :class:`ConsoleRedirect`."""
    location = exc.location if isinstance(exc, ConsoleRedirect) else "/login"
    return RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)


@dataclass(frozen=True)
class Viewer:
    """The user looking at a page, and the CSRF token its scripts and forms send."""

    user: User
    csrf: str

    def can(self, role: str) -> bool:
        """Whether the viewer has ``role`` (or one above it)."""
        return role_at_least(self.user.role, role)


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def console_viewer(request: Request, session: SessionDep) -> Viewer:
    """The viewer of a console page; no live session redirects to the log-in form."""
    cookie = request.cookies.get(SESSION_COOKIE)
    user = crud.user_for_token(session, cookie) if cookie else None
    if user is None or cookie is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        msg = f"/login?next={quote(target, safe='')}"
        raise ConsoleRedirect(msg)
    return Viewer(user=user, csrf=csrf_token_for(cookie))


ViewerDep = Annotated[Viewer, Depends(console_viewer)]


def forbidden(request: Request, viewer: Viewer, role: str) -> HTMLResponse:
    """The 403 page: this page needs ``role``."""
    return render(
        request,
        "forbidden.html",
        {"viewer": viewer, "role": role, "title": "Not allowed"},
        status_code=status.HTTP_403_FORBIDDEN,
    )


def _login_page(
    request: Request, *, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "login.html",
        {"viewer": None, "next": next_path, "error": error, "title": "Log in"},
        status_code=status_code,
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The log-in form."""
    return _login_page(request, next_path=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: Annotated[LoginPolicy, Depends(login_policy)],
) -> Response:
    """Check the password; on success set the session cookie and go on."""
    form = await request.form()
    username = str(form.get("username", ""))[:128]
    password = str(form.get("password", ""))
    next_path = safe_next(str(form.get("next", "/")))
    if request.headers.get("origin") and not same_origin(request):
        # Another site posting a log-in form (log-in CSRF): refuse.
        return _login_page(
            request,
            next_path=next_path,
            error="Log in from this server's own page.",
            status_code=403,
        )
    if not username or not password:
        return _login_page(
            request,
            next_path=next_path,
            error="Enter your user name and password.",
            status_code=422,
        )
    outcome = await run_in_threadpool(
        attempt_login,
        session,
        settings,
        policy,
        username=username,
        password=password,
        address=client_address(request),
    )
    if outcome.retry_after_s is not None:
        page = _login_page(
            request,
            next_path=next_path,
            error=f"{outcome.locked_detail[0].upper()}{outcome.locked_detail[1:]}.",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
        page.headers["Retry-After"] = str(outcome.retry_after_s)
        return page
    if outcome.token is None:
        if outcome.delay_s > 0:
            await policy.sleep(outcome.delay_s)
        return _login_page(
            request,
            next_path=next_path,
            error="Wrong user name or password.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, request, outcome.token, settings.access_token_ttl_s)
    return response


def _revoke(session: SessionDep, token: str, address: str | None) -> None:
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if found is None:
        return
    row, user = found
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    session.add(row)
    audit.record(
        session,
        actor=user.username,
        action="logout",
        target=f"token:{row.id}",
        details={"kind": row.kind, "method": "console"},
        source_ip=address,
    )
    session.commit()


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    """Revoke the console session's token and forget the cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await check_csrf(request, cookie)
        await run_in_threadpool(_revoke, session, cookie, client_address(request))
        recheck_access(request)
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response, request)
    return response
