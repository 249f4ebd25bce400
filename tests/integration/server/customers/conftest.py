"""The real app on SQLite and on PostgreSQL, with users of each role.

``client``, ``engine`` and ``auth`` are ``tests/fixtures/server_app.py``'s (through
``tests/integration/server/conftest.py``); only the settings differ: each database, and the
access log in a file (a test reads it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ServerSettings
from tests.fixtures.server_app import app_settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    """Settings for a server on a fresh database (SQLite, then PostgreSQL)."""
    return app_settings(tmp_path, database_url, access_log_file=tmp_path / "access.log")
