"""A migrated SQLite database with the test fleet (``tests/fixtures/kpi_db.py``)."""

from tests.fixtures.kpi_db import engine

__all__ = ["engine"]
