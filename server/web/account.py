"""The console's account page: one's password and two-factor login.

Each form is a plain CSRF-checked post answered with the page again. The password
and codes are checked again under the login lock (:func:`server.api.routes.auth.
check_password_again`, :func:`~server.api.routes.auth.check_code_again`), and the
second factor changes through :mod:`server.mfa` like ``/api/v1/auth/mfa``: the
enrolment shows the ``otpauth://`` URI as a QR code drawn on the server
(:mod:`server.web.qr`) and the key for typing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlmodel import Session

from server import accounts, mfa
from server.api.deps import (
    SESSION_COOKIE,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    checked_form,
    client_address,
    recheck_access,
)
from server.api.routes.auth import check_code_again, check_password_again
from server.config import ServerSettings
from server.crud import InvalidInput
from server.web.auth import ACCOUNT_PATH, Viewer, ViewerDep
from server.web.qr import qr_svg
from server.web.templating import NO_NOTICE, Notice, gettext, render
from server.web.texts import N_
from shared.errors import AuthError, Conflict, NotFound

router = APIRouter(include_in_schema=False)

#: The accessible name of the enrolment's QR code.
_QR_LABEL = N_("QR code for your authenticator app")


def _qr_of(enrolment: mfa.Enrolment) -> Callable[[], Markup]:
    """The enrolment's QR code, drawn as the page renders: named in the page's language."""
    return lambda: qr_svg(enrolment.otpauth_uri, label=gettext(_QR_LABEL))


def _account_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    notice: Notice = NO_NOTICE,
    *,
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
            "tr": gettext,
            **notice.context(),
            "mfa": found,
            "enrolment": enrolment,
            "enrolment_qr": _qr_of(enrolment) if enrolment else None,
            "recovery_codes": recovery_codes,
        },
        status_code=notice.status_code,
    )


def _refused(request: Request, session: Session, viewer: Viewer, exc: Exception) -> HTMLResponse:
    """The account page again, saying why a form was refused (:meth:`Notice.refused`)."""
    return _account_page(request, session, viewer, Notice.refused(exc))


@router.get(ACCOUNT_PATH, response_class=HTMLResponse)
def account_page(request: Request, session: SessionDep, viewer: ViewerDep) -> HTMLResponse:
    """The viewer's account: change the password (required after an administrator's reset),
    two-factor login (required for some roles)."""
    return _account_page(request, session, viewer)


async def _mfa_form(request: Request) -> tuple[str, str]:
    """Check the CSRF token of an account form; its ``password`` and ``code`` fields."""
    form = await checked_form(request)
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
    except (HTTPException, Conflict) as exc:
        return _refused(request, session, viewer, exc)
    return _account_page(request, session, viewer, enrolment=found)


#: What the account page says once a code form went through.
_CODE_DONE: dict[mfa.CodeAction, str] = {
    "confirm": N_("Two-factor login is on."),
    "recovery-codes": N_("New recovery codes."),
    "disable": N_("Two-factor login is off."),
}


@router.post(f"{ACCOUNT_PATH}/mfa/{{action}}", response_class=HTMLResponse)
async def mfa_code_form(
    action: mfa.CodeAction,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """On a current code: turn two-factor login on (``confirm``; the recovery codes, shown
    once), new recovery codes (the old ones stop working), or turn it off (``disable``,
    not where one's role requires it)."""
    _, code = await _mfa_form(request)
    address = client_address(request)

    def act(now: datetime) -> list[str]:
        return mfa.act_on_code(
            session, settings, action, user=viewer.user, code=code, now=now, source_ip=address
        )

    try:
        codes = await run_in_threadpool(
            check_code_again, session, policy, viewer.user, act, address
        )
    except (HTTPException, Conflict, NotFound) as exc:
        return _refused(request, session, viewer, exc)
    return _account_page(
        request, session, viewer, Notice(done=_CODE_DONE[action]), recovery_codes=codes or None
    )


@router.post(ACCOUNT_PATH, response_class=HTMLResponse)
async def change_password(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    policy: LoginPolicyDep,
) -> Response:
    """Change the viewer's password; their other logins end (audited)."""
    form = await checked_form(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    if new != str(form.get("new_password_again", "")):
        return _account_page(
            request, session, viewer, Notice(error=N_("The new passwords differ."), status_code=422)
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
    except (HTTPException, InvalidInput, AuthError) as exc:
        return _refused(request, session, viewer, exc)
    recheck_access(request)
    return RedirectResponse("/", status_code=status.HTTP_303_SEE_OTHER)
