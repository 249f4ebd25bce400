"""Fixtures that start real services on free loopback ports and always stop them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.postgres import PostgresCluster

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tests.fixtures.dicom import VerificationScp


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto broker for one test (plain MQTT on loopback, anonymous)."""
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One private PostgreSQL cluster for the whole run."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A SQLAlchemy URL of a new, empty PostgreSQL database for one test."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLAlchemy URL of an empty database: each test using it runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'fieldlink.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
def scp() -> Iterator[VerificationScp]:
    """A real DICOM Verification SCP titled PACS on loopback (pynetdicom, loaded only here)."""
    from tests.fixtures.dicom import VerificationScp

    server = VerificationScp()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    """A migrated, empty database (SQLite or PostgreSQL) and its engine."""
    from server.db import create_schema, make_engine

    engine = make_engine(database_url)
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow modules first: those marked ``browser`` (a demo and Chromium each) or
    ``slow``, then the others by their number of tests, most first.

    ``make test`` runs tests/integration and tests/browser with ``--dist loadfile
    --no-loadscope-reorder``: xdist hands out whole modules in this order, so the long
    ones start early and the short ones fill the end, and both workers finish together
    (its own order, by the number of tests alone, left the one-test browser modules and
    the demo for the end, one worker running them while the other had nothing to do).
    Tests keep their order within a module; a run without a slow module is not reordered.
    """

    def slow(item: pytest.Item) -> bool:
        return item.get_closest_marker("browser") is not None or (
            item.get_closest_marker("slow") is not None
        )

    if not any(slow(item) for item in items):
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    ordered = sorted(
        modules.values(), key=lambda tests: (not any(slow(t) for t in tests), -len(tests))
    )
    items[:] = [item for tests in ordered for item in tests]
