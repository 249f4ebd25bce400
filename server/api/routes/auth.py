"""Log in and out, change one's password: the API's side of :mod:`server.logins`.

The password flow gives a short-lived bearer token; failed logins are counted,
slowed down and locked as :mod:`server.logins` describes, answered with 429, how
long in the message and ``Retry-After``. Long-lived API tokens for scripts are
in :mod:`server.api.routes.tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from server import accounts, audit, mfa
from server.api.deps import (
    SESSION_COOKIE,
    CurrentUser,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    TokenDep,
    client_address,
    recheck_access,
)
from server.config import ServerSettings
from server.logins import (
    LoginPolicy,
    attempt_login,
    count_failure,
    locked_detail,
    locked_until,
    user_key,
)
from server.models import ApiToken, User, UserPublic
from server.security import hash_token, verify_password
from shared.errors import AuthError, Conflict, NotFound
from shared.ids import isoformat_z

_T = TypeVar("_T")

router = APIRouter(prefix="/auth", tags=["auth"])

#: The header of a 401 that asks for the second factor (the CLI prompts for it).
MFA_HEADER = "X-Fieldlink-MFA"
MFA_NEEDED_DETAIL = "a two-factor code is required (the otp field)"
MFA_WRONG_DETAIL = "wrong two-factor code"


class Token(BaseModel):
    """A bearer token and how long it lives."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int
    #: An administrator reset the password: this token may only change it.
    password_change_required: bool = False
    #: The user's role requires two-factor login and they have none: this token may
    #: only enrol it (``POST /api/v1/auth/mfa``).
    mfa_enrolment_required: bool = False


@router.post(
    "/token",
    responses={
        401: {
            "description": "wrong user name or password, or a two-factor code is needed "
            "(``X-Fieldlink-MFA: required``) or was wrong"
        },
        429: {"description": "too many failed logins; see Retry-After"},
    },
)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    otp: Annotated[str | None, Form(max_length=64)] = None,
) -> Token:
    """Exchange a user name and password (and ``otp``, a two-factor code or a recovery
    code, for users with two-factor login on) for a short-lived bearer token."""
    outcome = await run_in_threadpool(
        attempt_login,
        session,
        settings,
        policy,
        username=form.username,
        password=form.password,
        address=client_address(request),
        code=otp or None,
    )
    if outcome.retry_after_s is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=outcome.locked_detail,
            headers={"Retry-After": str(outcome.retry_after_s)},
        )
    if outcome.token is None:
        if outcome.delay_s > 0:
            await policy.sleep(outcome.delay_s)
        if outcome.mfa_required:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=MFA_WRONG_DETAIL if otp else MFA_NEEDED_DETAIL,
                headers={"WWW-Authenticate": "Bearer", MFA_HEADER: "required"},
            )
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Token(
        access_token=outcome.token,
        expires_in=settings.access_token_ttl_s,
        password_change_required=outcome.must_change_password,
        mfa_enrolment_required=outcome.mfa_enrolment_required,
    )


@router.get("/me")
def me(session: SessionDep, user: CurrentUser) -> UserPublic:
    """The user the bearer token belongs to."""
    return UserPublic.model_validate(user).model_copy(
        update={"mfa_enabled": mfa.is_active(session, user)}
    )


@router.post("/logout", status_code=204)
def logout(request: Request, session: SessionDep, user: CurrentUser, token: TokenDep) -> Response:
    """Revoke the bearer token that came with this request."""
    row = session.exec(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token or ""))
    ).first()
    if row is not None and accounts.log_out(
        session, user=user, row=row, source_ip=client_address(request)
    ):
        recheck_access(request)
    return Response(status_code=204)


class PasswordChange(BaseModel):
    """Body of ``POST /api/v1/auth/password``."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post(
    "/password",
    status_code=204,
    responses={
        401: {"description": "not logged in, or the current password is wrong"},
        422: {"description": "the new password is not acceptable"},
        429: {"description": "too many wrong passwords; see Retry-After"},
    },
)
def change_password(
    body: PasswordChange,
    request: Request,
    session: SessionDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
    token: TokenDep,
) -> Response:
    """Change one's own password; one's other logins end (API tokens stay)."""
    address = client_address(request)
    check_password_again(session, policy, user, body.current_password, address)
    presented = token or request.cookies.get(SESSION_COOKIE)
    accounts.change_password(
        session,
        user=user,
        current=body.current_password,
        new=body.new_password,
        keep_token=presented,
        source_ip=address,
    )
    recheck_access(request)
    return Response(status_code=204)


def check_password_again(
    session: Session, policy: LoginPolicy, user: User, password: str, address: str | None
) -> None:
    """401 (counted like a failed login, 429 once locked) unless ``password`` is the user's."""
    now = _refuse_if_locked(session, policy, user)
    if not verify_password(password, user.password_hash):
        raise _failed_check(session, policy, user, now, "password", address)


#: A wrong password or code asked for again: its audit action and its 401's detail.
_FAILED_CHECKS = {
    "password": ("password_check_failed", "the password is wrong"),
    "code": ("mfa_check_failed", "the code is wrong"),
}


def _refuse_if_locked(session: Session, policy: LoginPolicy, user: User) -> datetime:
    """429 while ``user``'s name is locked out; else the policy's now."""
    now = policy.clock()
    until = locked_until(session, [user_key(user.username)], now)
    if until is not None:
        retry = max(1, math.ceil((until - now).total_seconds()))
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=locked_detail(retry),
            headers={"Retry-After": str(retry)},
        )
    return now


def _failed_check(
    session: Session,
    policy: LoginPolicy,
    user: User,
    now: datetime,
    wrong: Literal["password", "code"],
    address: str | None,
) -> HTTPException:
    """Count a wrong password or code like a failed login (audited): the 401 to raise."""
    action, detail = _FAILED_CHECKS[wrong]
    failures, lock = count_failure(
        session, user_key(user.username), now=now, policy=policy, limit=policy.max_failures
    )
    audit.record(
        session,
        actor=user.username,
        action=action,
        target=f"user:{user.username}",
        details={"failures": failures}
        | ({"locked_until": isoformat_z(lock)} if lock is not None else {}),
        source_ip=address,
    )
    session.commit()
    return HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=detail)


def check_code_again(
    session: Session,
    policy: LoginPolicy,
    user: User,
    action: Callable[[datetime], _T],
    address: str | None,
) -> _T:
    """Run ``action`` (which checks a two-factor code, raising :class:`AuthError` when it
    is wrong) under the login lock: a wrong code counts like a failed login (401, then 429)."""
    now = _refuse_if_locked(session, policy, user)
    try:
        return action(now)
    except AuthError:
        raise _failed_check(session, policy, user, now, "code", address) from None


def check_second_factor_again(
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    user: User,
    code: str | None,
    address: str | None,
) -> str | None:
    """For a step that asks for the second factor again (minting an API token): nothing
    for a user without one; else spend ``code`` (a current TOTP or a recovery code) and
    say how, 401 (with ``X-Fieldlink-MFA: required``) without one, 401 for a wrong or
    spent one (counted like a failed login, 429 once locked)."""
    if not mfa.is_active(session, user):
        return None
    if not code or not code.strip():
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=MFA_NEEDED_DETAIL,
            headers={MFA_HEADER: "required"},
        )

    def spend(now: datetime) -> str:
        return mfa.check_code(session, settings, user=user, code=code, now=now)

    return check_code_again(session, policy, user, spend, address)


class MfaStatusPublic(BaseModel):
    """One's second factor (never its secret)."""

    enabled: bool
    #: An enrolment was begun and awaits its first code.
    pending: bool
    #: One's role requires it (``[server] mfa_required_roles``).
    required: bool
    recovery_codes_left: int


class MfaEnrolmentStart(BaseModel):
    """Body of ``POST /api/v1/auth/mfa``: one's password again."""

    password: str = Field(min_length=1, max_length=1024)


class MfaEnrolment(BaseModel):
    """A new TOTP secret, shown this once: scan the URI (a QR code) or type the secret."""

    secret: str
    otpauth_uri: str


class MfaCode(BaseModel):
    """A two-factor code (six digits), or a recovery code where one is accepted."""

    code: str = Field(min_length=1, max_length=64)


class MfaRecoveryCodes(BaseModel):
    """One-time recovery codes, shown this once (each logs in once without the phone)."""

    recovery_codes: list[str]


_MFA_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not logged in, or the password or code is wrong"},
    409: {"description": "two-factor login is already on (or off, or required)"},
    429: {"description": "too many wrong passwords or codes; see Retry-After"},
}


@router.get("/mfa")
def mfa_status(session: SessionDep, settings: SettingsDep, user: CurrentUser) -> MfaStatusPublic:
    """Whether one's two-factor login is on, being enrolled or required."""
    found = mfa.status(session, settings, user)
    return MfaStatusPublic(
        enabled=found.enabled,
        pending=found.pending,
        required=found.required,
        recovery_codes_left=found.recovery_codes_left,
    )


@router.post("/mfa", responses=_MFA_ERRORS)
def mfa_enrol(
    body: MfaEnrolmentStart,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
) -> MfaEnrolment:
    """Begin enrolling an authenticator (one's password again): its secret, shown once.

    Confirm with its first code (``POST /api/v1/auth/mfa/confirm``); until then the
    login does not change.
    """
    address = client_address(request)
    check_password_again(session, policy, user, body.password, address)
    try:
        found = mfa.begin_enrolment(session, settings, user=user, source_ip=address)
    except Conflict as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return MfaEnrolment(secret=found.secret, otpauth_uri=found.otpauth_uri)


def _act_on_code(
    action: mfa.CodeAction,
    body: MfaCode,
    request: Request,
    session: Session,
    settings: ServerSettings,
    policy: LoginPolicy,
    user: User,
) -> list[str]:
    """Run one of :func:`server.mfa.act_on_code`'s actions under the login lock."""
    address = client_address(request)

    def act(now: datetime) -> list[str]:
        return mfa.act_on_code(
            session, settings, action, user=user, code=body.code, now=now, source_ip=address
        )

    try:
        return check_code_again(session, policy, user, act, address)
    except NotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except Conflict as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None


@router.post("/mfa/confirm", responses=_MFA_ERRORS | {404: {"description": "no enrolment"}})
def mfa_confirm(
    body: MfaCode,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
) -> MfaRecoveryCodes:
    """Turn two-factor login on with the authenticator's first code; the recovery codes."""
    codes = _act_on_code("confirm", body, request, session, settings, policy, user)
    return MfaRecoveryCodes(recovery_codes=codes)


@router.post("/mfa/recovery-codes", responses=_MFA_ERRORS)
def mfa_recovery_codes(
    body: MfaCode,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
) -> MfaRecoveryCodes:
    """New recovery codes, on a current code from the authenticator (the old ones end)."""
    codes = _act_on_code("recovery-codes", body, request, session, settings, policy, user)
    return MfaRecoveryCodes(recovery_codes=codes)


@router.post("/mfa/disable", status_code=204, responses=_MFA_ERRORS)
def mfa_disable(
    body: MfaCode,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    user: CurrentUser,
) -> Response:
    """Turn one's two-factor login off, on a current code or a recovery code.

    Refused (409) when one's role requires it: an administrator resets it instead.
    """
    _act_on_code("disable", body, request, session, settings, policy, user)
    return Response(status_code=204)
