"""The viewer's console language: ``POST /account/language`` (the account page's form)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import RedirectResponse, Response

from server import accounts, i18n
from server.api.deps import SessionDep, checked_form
from server.web.auth import ACCOUNT_PATH, ViewerDep

router = APIRouter(include_in_schema=False)


@router.post(f"{ACCOUNT_PATH}/language")
async def choose_language(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """Keep the viewer's language (empty: the browser's); back to the account page in it."""
    form = await checked_form(request)
    chosen = i18n.supported(str(form.get("language", ""))[:16])
    user = viewer.user
    if chosen != user.language:
        accounts.set_language(session, user=user, language=chosen)
    return RedirectResponse(f"{ACCOUNT_PATH}#language", status_code=status.HTTP_303_SEE_OTHER)
