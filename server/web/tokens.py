"""The console's API-token page: one's long-lived tokens for scripts, made and revoked.

Minting asks for the password again and, for a user with two-factor login, a
current code (or a recovery code), like ``POST /api/v1/auth/tokens``: a stolen
console session alone cannot mint a token. Both go through the API's own
functions (:func:`server.api.routes.tokens.mint_api_token`,
:func:`~server.api.routes.tokens.revoke_api_token`): the same checks, lockout and
audit. A new token is shown once, in the page (never in a URL).
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from server import mfa
from server.api.deps import (
    SESSION_COOKIE,
    LoginPolicyDep,
    SessionDep,
    SettingsDep,
    check_csrf,
    checked_form,
    client_address,
)
from server.api.responses import DB_INT_MAX
from server.api.routes.tokens import ApiTokenCreate, ApiTokenCreated, mint_api_token
from server.api.routes.tokens import revoke_api_token as revoke_through_api
from server.models import ApiToken
from server.web.auth import ACCOUNT_PATH, Viewer, ViewerDep
from server.web.templating import NO_NOTICE, Notice, gettext, render
from server.web.texts import N_

router = APIRouter(include_in_schema=False)

TOKENS_PATH = f"{ACCOUNT_PATH}/tokens"
#: Tokens the page lists (newest first); more are in ``GET /api/v1/auth/tokens``.
TOKENS_SHOWN = 100


def _tokens_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    notice: Notice = NO_NOTICE,
    *,
    created: ApiTokenCreated | None = None,
) -> HTMLResponse:
    settings = request.app.state.settings
    rows = session.exec(
        select(ApiToken)
        .where(
            sa.and_(
                col(ApiToken.user_id) == viewer.user.id,
                col(ApiToken.kind) == "api",
                col(ApiToken.revoked_at).is_(None),
            )
        )
        .order_by(col(ApiToken.id).desc())
        .limit(TOKENS_SHOWN)
    ).all()
    with_code = mfa.is_active(session, viewer.user)
    session.commit()
    return render(
        request,
        "tokens.html",
        {
            "viewer": viewer,
            "title": "Your API tokens",
            "tr": gettext,
            "tokens": rows,
            "with_code": with_code,
            "max_days": settings.api_token_max_days,
            "created": created,
            **notice.context(),
        },
        status_code=notice.status_code,
    )


@router.get(TOKENS_PATH, response_class=HTMLResponse)
def tokens_page(request: Request, session: SessionDep, viewer: ViewerDep) -> HTMLResponse:
    """One's API tokens for scripts: make one (shown once), revoke one."""
    return _tokens_page(request, session, viewer)


@router.post(TOKENS_PATH, response_class=HTMLResponse)
async def mint_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    policy: LoginPolicyDep,
    viewer: ViewerDep,
) -> Response:
    """Make an API token: its name, the password again and, with two-factor login, a code."""
    form = await checked_form(request)
    days = str(form.get("expires_in_days", "")).strip()
    try:
        body = ApiTokenCreate(
            name=str(form.get("name", "")).strip(),
            password=str(form.get("password", ""))[:1024],
            otp=str(form.get("code", ""))[:64] or None,
            expires_in_days=int(days) if days.isdigit() else None,
        )
    except ValidationError:
        return _tokens_page(
            request,
            session,
            viewer,
            Notice(
                error=N_("Give the token a name (up to 128 characters) and your password."),
                status_code=422,
            ),
        )
    try:
        created = await run_in_threadpool(
            mint_api_token, session, settings, policy, viewer.user, body, client_address(request)
        )
    except HTTPException as exc:
        return _tokens_page(request, session, viewer, Notice.refused(exc))
    return _tokens_page(request, session, viewer, created=created)


@router.post(TOKENS_PATH + "/{token_id}/revoke", response_class=HTMLResponse)
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
) -> Response:
    """Revoke one of one's API tokens (audited)."""
    await check_csrf(request, request.cookies.get(SESSION_COOKIE, ""))
    try:
        await run_in_threadpool(revoke_through_api, token_id, request, session, viewer.user)
    except HTTPException as exc:
        return _tokens_page(request, session, viewer, Notice.refused(exc))
    revoked = Notice(done=N_("Token %(id)s revoked."), done_args={"id": str(token_id)})
    return _tokens_page(request, session, viewer, revoked)
