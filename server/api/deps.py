"""Dependencies shared by the API routes: settings, database session, current user, roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.config import ServerSettings
from server.models import User, role_at_least

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
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="not authenticated: a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_current_user(session: SessionDep, token: TokenDep) -> User:
    """The user whose bearer token came with the request, or 401."""
    if not token:
        raise _UNAUTHORIZED
    user = crud.user_for_token(session, token)
    if user is None:
        raise _UNAUTHORIZED
    return user


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


OperatorUser = Annotated[User, Depends(require_role("operator"))]
ManagerUser = Annotated[User, Depends(require_role("manager"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]


def websocket_user(websocket: WebSocket, session: Session) -> User | None:
    """The user a WebSocket authenticates as (bearer ``Authorization`` header), or ``None``."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return crud.user_for_token(session, token.strip())
