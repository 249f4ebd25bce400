"""An API under test: the real app on a real database, users of each role, their tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from server.config import ServerSettings
from server.main import create_app
from tests.fixtures.api_auth import Auth, make_auth


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    """Settings for a server on a fresh SQLite file; no broker is reachable."""
    return ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'fieldlink.db'}",
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
        ssh_gateway_port=-1,
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
def auth(client: TestClient) -> Auth:
    """``auth(role)`` creates a user of that role and returns its Authorization header."""
    return make_auth(client)
