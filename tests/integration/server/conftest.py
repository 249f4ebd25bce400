"""The real app on a SQLite file with users of each role (``tests/fixtures/server_app.py``)."""

from tests.fixtures.server_app import auth, client, engine, settings

__all__ = ["auth", "client", "engine", "settings"]
