"""Dependencies shared by the API routes: settings, database session, current user, roles.

A caller proves who it is with a bearer token (scripts, the CLI) or with the
console's session cookie (browsers). The cookie holds a short-lived access token
like the bearer one; because a browser sends it by itself, every unsafe request
made with it must also carry the CSRF token of that session (``X-CSRF-Token``
header, or the ``csrf_token`` field of a plain form post). The CSRF token is an
HMAC of the session token, so the server keeps no state for it and a page that
shows it never shows the session token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response, WebSocket, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.requests import HTTPConnection

from server import crud, mfa
from server.config import ServerSettings
from server.kpi.report import default_window
from server.logins import LoginPolicy
from server.models import User, role_at_least
from server.scope import Scope
from server.security import tokens_equal
from shared.ids import utcnow

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_settings(request: Request) -> ServerSettings:
    """The server's settings, kept on the app by the lifespan."""
    settings: ServerSettings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    """The database engine, kept on the app by the lifespan."""
    engine: Engine = request.app.state.engine
    return engine


def get_db(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """A database session per request, committed by the route when it writes."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
#: The same database session under the name it has where "session" means a remote session.
DbDep = SessionDep
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="not authenticated: a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)

# The console's session cookie and its CSRF token.

#: The cookie that carries a browser's access token (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "fieldlink_session"
#: The header (scripts in the page) and form field (plain form posts) carrying the CSRF token.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
CSRF_DETAIL = "CSRF token missing or wrong"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CSRF_PURPOSE = b"fieldlink console csrf v1"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a console session: an HMAC keyed by its (secret) session token."""
    return hmac.new(session_token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_token_valid(session_token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``session_token`` (constant time)."""
    return bool(presented) and tokens_equal(csrf_token_for(session_token), presented or "")


def is_https(connection: HTTPConnection) -> bool:
    """Whether the browser reached us over TLS (then cookies are ``Secure``)."""
    return connection.url.scheme in ("https", "wss")


def set_session_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    """Put a console session (``token``, living ``max_age`` seconds) into ``response``."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    """Remove the console session cookie from the browser."""
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request)
    )


async def presented_csrf_token(request: Request) -> str | None:
    """The CSRF token a request carries: the header, else a plain form post's field."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").lower().startswith(_FORM_TYPES):
        # The body is kept (Starlette caches it) so the route can still read it.
        await request.body()
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check_csrf(request: Request, session_token: str) -> None:
    """403 unless an unsafe request made with the session cookie carries its CSRF token."""
    if request.method in SAFE_METHODS:
        return
    if not csrf_token_valid(session_token, await presented_csrf_token(request)):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=CSRF_DETAIL)


async def checked_form(request: Request) -> FormData:
    """A console page's posted form, once the session cookie's CSRF token is checked (403
    otherwise)."""
    await check_csrf(request, request.cookies.get(SESSION_COOKIE, ""))
    return await request.form()


def _user_for_token(session: Session, token: str) -> User | None:
    """The token's user; the transaction ends at once, so the request holds no connection
    while it waits (a session being opened, a command running on a device)."""
    user = crud.user_for_token(session, token)
    session.commit()
    return user


#: What a user whose password an administrator reset may still do: choose a new one.
PASSWORD_CHANGE_PATHS = frozenset(
    {"/api/v1/auth/password", "/api/v1/auth/me", "/api/v1/auth/logout"}
)
CREDENTIAL_CHANGE_DETAIL = (
    "a new password is required first: POST /api/v1/auth/password "
    "(`fieldlink passwd`, or the console's account page)"
)


#: What a user whose role requires a second factor they lack may still do: enrol one.
MFA_ENROLMENT_PATHS = frozenset(
    {
        "/api/v1/auth/mfa",
        "/api/v1/auth/mfa/confirm",
        "/api/v1/auth/me",
        "/api/v1/auth/logout",
        "/api/v1/auth/password",
    }
)
MFA_ENROLMENT_DETAIL = (
    "your role requires two-factor login: enrol an authenticator first "
    "(POST /api/v1/auth/mfa, then /api/v1/auth/mfa/confirm; or the console's account page)"
)


def _needs_mfa_enrolment(session: Session, settings: ServerSettings, user: User) -> bool:
    if not mfa.required_for(settings, user):
        return False  # no query for the roles that do not need it
    pending = mfa.enrolment_pending(session, settings, user)
    session.commit()
    return pending


async def _password_change_gate(
    request: Request, session: Session, settings: ServerSettings, user: User
) -> User:
    if user.must_change_password and request.url.path not in PASSWORD_CHANGE_PATHS:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=CREDENTIAL_CHANGE_DETAIL)
    if request.url.path not in MFA_ENROLMENT_PATHS and await run_in_threadpool(
        _needs_mfa_enrolment, session, settings, user
    ):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=MFA_ENROLMENT_DETAIL)
    return user


async def get_current_user(
    request: Request, session: SessionDep, settings: SettingsDep, token: TokenDep
) -> User:
    """The user of the request's bearer token, or of its session cookie (with CSRF); else 401.

    A bearer token wins when both are present: scripts are never subject to CSRF.
    A user whose password was reset may only change it (403 otherwise); one whose
    role requires a second factor they have not enrolled may only enrol it.
    """
    if token:
        user = await run_in_threadpool(_user_for_token, session, token)
        if user is None:
            raise _UNAUTHORIZED
        return await _password_change_gate(request, session, settings, user)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise _UNAUTHORIZED
    user = await run_in_threadpool(_user_for_token, session, cookie)
    if user is None:
        raise _UNAUTHORIZED
    await check_csrf(request, cookie)
    return await _password_change_gate(request, session, settings, user)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(role: str) -> Callable[[User], User]:
    """A dependency that lets only ``role`` and the roles above it through (403 otherwise)."""

    def check(user: CurrentUser) -> User:
        if not role_at_least(user.role, role):
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN, detail=f"this needs the {role} role"
            )
        return user

    check.__name__ = f"require_{role}"
    return check


#: Any user, a ``site`` user included: routes that serve a site user too (their own
#: devices and the sessions on them); they must filter by the request's scope.
SiteUser = Annotated[User, Depends(require_role("site"))]
OperatorUser = Annotated[User, Depends(require_role("operator"))]
ManagerUser = Annotated[User, Depends(require_role("manager"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]


def get_scope(user: CurrentUser) -> Scope:
    """The request's scope: the customers and regions its user may see (see server.scope)."""
    return Scope.of(user)


#: The one scope of a request; every query of the fleet filters by it.
ScopeDep = Annotated[Scope, Depends(get_scope)]


def unscoped_user(user: CurrentUser) -> User:
    """403 for a scoped user: what adds to the whole fleet at once (CSV imports, new
    customers and devices) needs a user who sees all of it."""
    if not Scope.of(user).unrestricted:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="this needs a user who sees the whole fleet (no customer or region scope)",
        )
    return user


#: A route's ``dependencies=[UNSCOPED]``: only users without a scope.
UNSCOPED = Depends(unscoped_user)


def same_origin(connection: HTTPConnection) -> bool:
    """Whether the ``Origin`` header names the host the request was sent to."""
    origin = connection.headers.get("origin")
    host = connection.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == host.lower()


def websocket_user(websocket: WebSocket, session: Session) -> User | None:
    """The user a WebSocket authenticates as, or ``None``.

    The bearer ``Authorization`` header first; else the console's session cookie, but
    only when the socket's ``Origin`` is this server (a browser sends cookies with a
    WebSocket opened by any site: cross-site WebSocket hijacking).
    """
    token = websocket_token(websocket)
    user = crud.user_for_token(session, token) if token else None
    if user is None or user.must_change_password:
        return None
    settings: ServerSettings = websocket.app.state.settings
    return None if mfa.enrolment_pending(session, settings, user) else user


def websocket_token(websocket: WebSocket) -> str | None:
    """The token a WebSocket presents: its bearer header, else a same-origin console cookie."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = websocket.cookies.get(SESSION_COOKIE)
    if cookie and same_origin(websocket):
        return cookie
    return None


def login_policy(request: Request, settings: SettingsDep) -> LoginPolicy:
    """The app's login policy: ``app.state.login_policy`` if set, else from the settings."""
    policy = getattr(request.app.state, "login_policy", None)
    if isinstance(policy, LoginPolicy):
        return policy
    return LoginPolicy.from_settings(settings)


LoginPolicyDep = Annotated[LoginPolicy, Depends(login_policy)]


class KpiWindowQuery(BaseModel):
    """The window ``[from, to)`` of the KPI routes' query; a route adds its ``group_by``."""

    start: datetime | None = Field(
        None, alias="from", description="inclusive (closed_at); default: 12 months ago"
    )
    end: datetime | None = Field(
        None, alias="to", description="exclusive (closed_at); default: the next month's start"
    )

    def window(self) -> tuple[datetime, datetime]:
        """``(start, end)``, UTC where the query names no zone; each end not given is
        :func:`server.kpi.report.default_window`'s."""
        default_start, default_end = default_window(utcnow())
        return (
            _aware(self.start) if self.start is not None else default_start,
            _aware(self.end) if self.end is not None else default_end,
        )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def client_address(request: Request) -> str | None:
    """The client's address: the TCP peer's, or a trusted proxy's ``X-Forwarded-For``."""
    return request.client.host if request.client else None


def recheck_access(request: Request) -> None:
    """End live channels that depended on access just withdrawn now, not at the next check."""
    manager = getattr(request.app.state, "sessions", None)
    if manager is not None:
        manager.access.check_now()
