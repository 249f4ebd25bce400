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

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select

from server import accounts, audit, crud
from server.api.deps import (
    SESSION_COOKIE,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    check_csrf,
    clear_session_cookie,
    client_address,
    csrf_token_for,
    recheck_access,
    same_origin,
    set_session_cookie,
)
from server.api.routes.auth import check_password_again
from server.crud import InvalidInput
from server.logins import attempt_login
from server.models import ApiToken, User, role_at_least
from server.security import hash_token
from server.web.templating import render
from shared.errors import AuthError
from shared.ids import utcnow

router = APIRouter(include_in_schema=False)

#: The viewer's own account: change the password.
ACCOUNT_PATH = "/account"


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
    if user.must_change_password and request.url.path != ACCOUNT_PATH:
        raise ConsoleRedirect(ACCOUNT_PATH)  # an administrator reset the password
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
    policy: LoginPolicyDep,
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
    target = ACCOUNT_PATH if outcome.must_change_password else next_path
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, request, outcome.token, settings.access_token_ttl_s)
    return response


def _account_page(
    request: Request,
    viewer: Viewer,
    *,
    error: str | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "account.html",
        {"viewer": viewer, "title": "Your account", "error": error, "done": done},
        status_code=status_code,
    )


@router.get(ACCOUNT_PATH, response_class=HTMLResponse)
def account_page(request: Request, viewer: ViewerDep) -> HTMLResponse:
    """The viewer's account: change the password (required after an administrator's reset)."""
    return _account_page(request, viewer)


@router.post(ACCOUNT_PATH, response_class=HTMLResponse)
async def change_password(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    policy: LoginPolicyDep,
) -> Response:
    """Change the viewer's password; their other logins end (audited)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    await check_csrf(request, cookie)
    form = await request.form()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    if new != str(form.get("new_password_again", "")):
        return _account_page(request, viewer, error="The new passwords differ.", status_code=422)
    try:
        await run_in_threadpool(
            check_password_again, session, policy, viewer.user, current, client_address(request)
        )
        await run_in_threadpool(
            accounts.change_password,
            session,
            user=viewer.user,
            current=current,
            new=new,
            keep_token=cookie,
            source_ip=client_address(request),
        )
    except HTTPException as exc:
        return _account_page(request, viewer, error=str(exc.detail), status_code=exc.status_code)
    except (InvalidInput, AuthError) as exc:
        return _account_page(request, viewer, error=str(exc), status_code=422)
    recheck_access(request)
    return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)


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
