"""The real app on SQLite and on PostgreSQL, with users of each role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.config import ServerSettings
from server.main import create_app
from tests.fixtures.api_auth import PASSWORD


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    """Settings for a server on a fresh database (SQLite, then PostgreSQL)."""
    return ServerSettings(
        database_url=database_url,
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
        ssh_gateway_port=-1,
        access_log_file=tmp_path / "access.log",
    )


@pytest.fixture
def client(settings: ServerSettings) -> Iterator[TestClient]:
    """The app with its lifespan run (the database is migrated)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def engine(client: TestClient) -> Engine:
    """The app's database engine."""
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def auth(client: TestClient, engine: Engine) -> Callable[[str], dict[str, str]]:
    """``auth(role)``: the Authorization header of a new user of that role."""
    made: dict[str, dict[str, str]] = {}

    def headers(role: str) -> dict[str, str]:
        if role not in made:
            with Session(engine) as session:
                crud.create_user(session, username=f"{role}1", role=role, password=PASSWORD)
            answer = client.post(
                "/api/v1/auth/token", data={"username": f"{role}1", "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            made[role] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        return made[role]

    return headers
