"""Log in: the OAuth2 password flow gives a short-lived bearer token."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from server import crud
from server.api.deps import CurrentUser, SessionDep, SettingsDep
from server.models import UserPublic
from shared.errors import AuthError

router = APIRouter(prefix="/auth", tags=["auth"])


class Token(BaseModel):
    """A bearer token and how long it lives."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int


@router.post("/token")
def login(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a short-lived bearer token."""
    try:
        user = crud.authenticate(session, username=form.username, password=form.password)
    except AuthError as exc:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc
    ttl = settings.access_token_ttl_s
    token, _ = crud.issue_token(session, user=user, kind="access", ttl=timedelta(seconds=ttl))
    return Token(access_token=token, expires_in=ttl)


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    """The user the bearer token belongs to."""
    return UserPublic.model_validate(user)
