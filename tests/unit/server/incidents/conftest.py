"""The same migrated SQLite database with the test fleet as the KPI tests use."""

from tests.unit.server.kpi.conftest import engine

__all__ = ["engine"]
