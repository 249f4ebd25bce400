"""The same migrated SQLite database with the test fleet as the KPI tests use
(``tests/fixtures/kpi_db.py``)."""

from tests.fixtures.kpi_db import engine

__all__ = ["engine"]
