"""Console log-in and log-out, and who is looking at a page.

Logging in runs the API's password flow (the same throttling, lockout and
audit) and keeps the short-lived access token in an HttpOnly cookie
(:mod:`server.api.deps`); logging out revokes it. A page asked for without a
live session redirects to the log-in form; a page above the user's role
answers 403 with a page that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from server import accounts, audit, crud, mfa
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
from server.api.routes.auth import check_code_again, check_password_again
from server.config import ServerSettings
from server.crud import InvalidInput
from server.logins import MFA_PENDING_TTL_S, LoginOutcome, attempt_login, complete_login
from server.models import ApiToken, User, role_at_least
from server.scope import Scope
from server.security import hash_token
from server.web.templating import render
from shared.errors import AuthError, Conflict, NotFound
from shared.ids import utcnow

router = APIRouter(include_in_schema=False)

#: The viewer's own account: change the password, two-factor login.
ACCOUNT_PATH = "/account"
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
    if not request.url.path.startswith(ACCOUNT_PATH) and mfa.required_for(settings, user):
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
        pending=True,
    )
    if outcome.pending_token is not None:
        # The password was right; the second factor is asked for next.
        page = _login_page(request, next_path=next_path, code_step=True)
        _set_pending_cookie(page, request, outcome.pending_token)
        return page
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
        return _login_page(
            request,
            next_path=next_path,
            error="Log in from this server's own page.",
            status_code=403,
        )
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
        page = _login_page(
            request,
            next_path=next_path,
            error=f"{outcome.locked_detail[0].upper()}{outcome.locked_detail[1:]}.",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        )
        page.headers["Retry-After"] = str(outcome.retry_after_s)
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


def _account_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    *,
    error: str | None = None,
    done: str | None = None,
    status_code: int = 200,
    enrolment: mfa.Enrolment | None = None,
    recovery_codes: list[str] | None = None,
) -> HTMLResponse:
    settings: ServerSettings = request.app.state.settings
    found = mfa.status(session, settings, viewer.user)
    session.commit()
    return render(
        request,
        "account.html",
        {
            "viewer": viewer,
            "title": "Your account",
            "error": error,
            "done": done,
            "mfa": found,
            "enrolment": enrolment,
            "recovery_codes": recovery_codes,
        },
        status_code=status_code,
    )


@router.get(ACCOUNT_PATH, response_class=HTMLResponse)
def account_page(request: Request, session: SessionDep, viewer: ViewerDep) -> HTMLResponse:
    """The viewer's account: change the password (required after an administrator's reset),
    two-factor login (required for some roles)."""
    return _account_page(request, session, viewer)


async def _mfa_form(request: Request) -> tuple[str, str]:
    """Check the CSRF token of an account form; its ``password`` and ``code`` fields."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    await check_csrf(request, cookie)
    form = await request.form()
    return str(form.get("password", ""))[:1024], str(form.get("code", ""))[:64]


@router.post(f"{ACCOUNT_PATH}/mfa", response_class=HTMLResponse)
async def mfa_enrol(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """Begin enrolling an authenticator (the password again): its secret, shown once."""
    password, _ = await _mfa_form(request)
    address = client_address(request)
    try:
        await run_in_threadpool(
            check_password_again, session, policy, viewer.user, password, address
        )
        found = await run_in_threadpool(
            mfa.begin_enrolment, session, settings, user=viewer.user, source_ip=address
        )
    except HTTPException as exc:
        return _account_page(
            request, session, viewer, error=str(exc.detail), status_code=exc.status_code
        )
    except Conflict as exc:
        return _account_page(request, session, viewer, error=str(exc), status_code=409)
    return _account_page(request, session, viewer, enrolment=found)


@router.post(f"{ACCOUNT_PATH}/mfa/confirm", response_class=HTMLResponse)
async def mfa_confirm(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """Turn two-factor login on with the first code; the recovery codes, shown once."""
    _, code = await _mfa_form(request)
    address = client_address(request)

    def confirm(now: datetime) -> list[str]:
        return mfa.confirm_enrolment(
            session, settings, user=viewer.user, code=code, now=now, source_ip=address
        )

    try:
        codes = await run_in_threadpool(
            check_code_again, session, policy, viewer.user, confirm, address
        )
    except HTTPException as exc:
        return _account_page(
            request, session, viewer, error=str(exc.detail), status_code=exc.status_code
        )
    except (Conflict, NotFound) as exc:
        return _account_page(request, session, viewer, error=str(exc), status_code=409)
    return _account_page(
        request, session, viewer, done="Two-factor login is on.", recovery_codes=codes
    )


@router.post(f"{ACCOUNT_PATH}/mfa/recovery-codes", response_class=HTMLResponse)
async def mfa_recovery_codes(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """New recovery codes on a current code (the old ones stop working)."""
    _, code = await _mfa_form(request)
    address = client_address(request)

    def regenerate(now: datetime) -> list[str]:
        return mfa.regenerate_recovery_codes(
            session, settings, user=viewer.user, code=code, now=now, source_ip=address
        )

    try:
        codes = await run_in_threadpool(
            check_code_again, session, policy, viewer.user, regenerate, address
        )
    except HTTPException as exc:
        return _account_page(
            request, session, viewer, error=str(exc.detail), status_code=exc.status_code
        )
    except Conflict as exc:
        return _account_page(request, session, viewer, error=str(exc), status_code=409)
    return _account_page(request, session, viewer, done="New recovery codes.", recovery_codes=codes)


@router.post(f"{ACCOUNT_PATH}/mfa/disable", response_class=HTMLResponse)
async def mfa_disable(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """Turn two-factor login off on a current code (not where one's role requires it)."""
    _, code = await _mfa_form(request)
    address = client_address(request)

    def turn_off(now: datetime) -> None:
        mfa.disable(session, settings, user=viewer.user, code=code, now=now, source_ip=address)

    try:
        await run_in_threadpool(check_code_again, session, policy, viewer.user, turn_off, address)
    except HTTPException as exc:
        return _account_page(
            request, session, viewer, error=str(exc.detail), status_code=exc.status_code
        )
    except Conflict as exc:
        return _account_page(request, session, viewer, error=str(exc), status_code=409)
    return _account_page(request, session, viewer, done="Two-factor login is off.")


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
        return _account_page(
            request, session, viewer, error="The new passwords differ.", status_code=422
        )
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
        return _account_page(
            request, session, viewer, error=str(exc.detail), status_code=exc.status_code
        )
    except (InvalidInput, AuthError) as exc:
        return _account_page(request, session, viewer, error=str(exc), status_code=422)
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
