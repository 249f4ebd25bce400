"""Console log-in and log-out, and who is looking at a page (the account page, where
one changes one's password and two-factor login, is :mod:`server.web.account`).

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

from server import accounts, crud, mfa
from server.api.deps import (
    SESSION_COOKIE,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    check_csrf,
    clear_session_cookie,
    client_address,
    csrf_token_for,
    is_https,
    recheck_access,
    same_origin,
    set_session_cookie,
)
from server.config import ServerSettings
from server.logins import MFA_PENDING_TTL_S, LoginOutcome, attempt_login, complete_login
from server.models import ApiToken, User, role_at_least
from server.scope import Scope
from server.security import hash_token
from server.web.templating import render

router = APIRouter(include_in_schema=False)

#: The viewer's own account: change the password, two-factor login.
ACCOUNT_PATH = "/account"
#: The account's two-factor forms: all a user may reach until their role's second factor is on.
MFA_PATH = f"{ACCOUNT_PATH}/mfa"
#: The log-in's second step (the two-factor code), and the cookie that carries the
#: short-lived token between the steps (only this path receives it).
LOGIN_CODE_PATH = "/login/code"
MFA_PENDING_COOKIE = "fieldlink_mfa"


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

    @property
    def scope(self) -> Scope:
        """What of the fleet the viewer may see (:mod:`server.scope`)."""
        return Scope.of(self.user)


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
    settings: ServerSettings = request.app.state.settings
    enrolling = request.url.path == ACCOUNT_PATH or request.url.path.startswith(MFA_PATH)
    if not enrolling and mfa.required_for(settings, user):
        pending = mfa.enrolment_pending(session, settings, user)
        session.commit()
        if pending:
            raise ConsoleRedirect(ACCOUNT_PATH)  # the role requires a second factor first
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
    request: Request,
    *,
    next_path: str,
    error: str | None = None,
    status_code: int = 200,
    code_step: bool = False,
) -> HTMLResponse:
    return render(
        request,
        "login.html",
        {
            "viewer": None,
            "next": next_path,
            "error": error,
            "title": "Log in",
            "code_step": code_step,
        },
        status_code=status_code,
    )


#: A log-in form posted from another site (log-in CSRF) is refused with this.
_FOREIGN = "Log in from this server's own page."


def _locked_page(request: Request, next_path: str, outcome: LoginOutcome) -> HTMLResponse:
    """The log-in form again, 429: the name or address is locked for a while."""
    detail = outcome.locked_detail
    page = _login_page(
        request,
        next_path=next_path,
        error=f"{detail[0].upper()}{detail[1:]}.",
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    page.headers["Retry-After"] = str(outcome.retry_after_s)
    return page


def _set_pending_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        MFA_PENDING_COOKIE,
        token,
        max_age=MFA_PENDING_TTL_S,
        path=LOGIN_CODE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def _clear_pending_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        MFA_PENDING_COOKIE,
        path=LOGIN_CODE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def _logged_in(
    request: Request, settings: ServerSettings, outcome: LoginOutcome, next_path: str
) -> Response:
    token = outcome.token or ""
    enrol = outcome.must_change_password or outcome.mfa_enrolment_required
    target = ACCOUNT_PATH if enrol else next_path
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, request, token, settings.access_token_ttl_s)
    return response


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
        return _login_page(request, next_path=next_path, error=_FOREIGN, status_code=403)
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
        pending=True,
    )
    if outcome.pending_token is not None:
        # The password was right; the second factor is asked for next.
        page = _login_page(request, next_path=next_path, code_step=True)
        _set_pending_cookie(page, request, outcome.pending_token)
        return page
    if outcome.retry_after_s is not None:
        page = _locked_page(request, next_path, outcome)
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
    return _logged_in(request, settings, outcome, next_path)


@router.post(LOGIN_CODE_PATH, response_class=HTMLResponse)
async def login_code_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
) -> Response:
    """The second step: the code from the authenticator (or a recovery code)."""
    form = await request.form()
    code = str(form.get("code", ""))[:64]
    next_path = safe_next(str(form.get("next", "/")))
    pending = request.cookies.get(MFA_PENDING_COOKIE)
    if request.headers.get("origin") and not same_origin(request):
        return _login_page(request, next_path=next_path, error=_FOREIGN, status_code=403)
    if not pending:
        return _login_page(
            request,
            next_path=next_path,
            error="That took too long: log in again.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    if not code.strip():
        return _login_page(
            request,
            next_path=next_path,
            error="Enter the code from your authenticator app.",
            status_code=422,
            code_step=True,
        )
    outcome = await run_in_threadpool(
        complete_login,
        session,
        settings,
        policy,
        pending_token=pending,
        code=code,
        address=client_address(request),
    )
    if outcome.token is not None:
        response = _logged_in(request, settings, outcome, next_path)
        _clear_pending_cookie(response, request)
        return response
    if outcome.retry_after_s is not None:
        page = _locked_page(request, next_path, outcome)
        _clear_pending_cookie(page, request)
        return page
    if outcome.mfa_required:
        if outcome.delay_s > 0:
            await policy.sleep(outcome.delay_s)
        return _login_page(
            request,
            next_path=next_path,
            error="Wrong code.",
            status_code=status.HTTP_401_UNAUTHORIZED,
            code_step=True,
        )
    page = _login_page(
        request,
        next_path=next_path,
        error="That took too long: log in again.",
        status_code=status.HTTP_401_UNAUTHORIZED,
    )
    _clear_pending_cookie(page, request)
    return page


def _revoke(session: SessionDep, token: str, address: str | None) -> None:
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if found is None:
        return
    row, user = found
    accounts.log_out(session, user=user, row=row, source_ip=address, method="console")


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
