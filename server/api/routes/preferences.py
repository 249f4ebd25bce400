"""The caller's own preferences: ``GET|PUT /api/v1/auth/me/preferences`` (the console language)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from server import accounts
from server.api.deps import CurrentUser, SessionDep

router = APIRouter(prefix="/auth/me", tags=["auth"])


class Preferences(BaseModel):
    """What a user chooses for themself."""

    #: The console's language; ``null``: the browser's (``Accept-Language``).
    language: Annotated[Literal["en", "ja", "zh", "de", "fr"] | None, Field()] = None


@router.get("/preferences")
def get_preferences(user: CurrentUser) -> Preferences:
    """The caller's preferences."""
    return Preferences.model_validate({"language": user.language})


@router.put("/preferences")
def put_preferences(body: Preferences, session: SessionDep, user: CurrentUser) -> Preferences:
    """Change the caller's preferences (audited)."""
    accounts.set_language(session, user=user, language=body.language)
    return body
