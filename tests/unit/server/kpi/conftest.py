"""A migrated SQLite database with the test fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from server.db import create_schema, make_engine
from tests.fixtures.kpi_reference import add_devices


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'kpi.db'}")
    create_schema(engine)
    add_devices(engine)
    yield engine
    engine.dispose()
