"""Scratch databases for the in-process benchmarks (desk, lookup): seeding and timing.

Each benchmark runs the real application in its own process on SQLite and, unless
told not to, on a private PostgreSQL cluster (:func:`on_each_database`), seeds the
database with bulk ``INSERT``\\ s (:func:`incident_row`, :func:`add_bench_user`) and
times the server with :func:`timed` against baselines measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from tests.fixtures.postgres import PostgresCluster


def incident_row(
    device: dict[str, Any], opened: datetime, *, closed: bool, symptom: str | None = None
) -> dict[str, Any]:
    """An incident of ``device`` (a device row) opened at ``opened``, closed remotely 3 h
    later (restored after 2 h) or still open."""
    row = {
        "device_id": device["id"],
        "device_type": device["type"],
        "opened_at": opened,
        "down_at": opened,
        "restored_at": opened + timedelta(hours=2) if closed else None,
        "closed_at": opened + timedelta(hours=3) if closed else None,
        "resolution": "remote" if closed else None,
        "channel": "phone",
        "remote_session_used": closed,
        "created_at": opened,
        "updated_at": opened,
    }
    if symptom is not None:
        row["symptom"] = symptom
    return row


def add_bench_user(engine: Engine, password: str) -> None:
    """The operator ``bench`` the benchmark logs in as."""
    with Session(engine) as session:
        crud.create_user(session, username="bench", role="operator", password=password)


def timed(action: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``action``, after one to warm up."""
    action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def p95(times: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(value: float) -> str:
    """Seconds as milliseconds for a results table."""
    return f"{value * 1000:.1f} ms"


def on_each_database(
    name: str,
    run: Callable[[str, str, Path], dict[str, Any]],
    *,
    postgres: bool = True,
    sqlite: bool = True,
) -> list[dict[str, Any]]:
    """``run(database_url, label, state_dir)`` on a scratch SQLite database (with
    ``sqlite``), then (with ``postgres``) on a database of a private PostgreSQL cluster;
    their results."""
    results = []
    with tempfile.TemporaryDirectory(prefix=f"fieldlink-bench-{name}-") as scratch:
        if sqlite:
            url = f"sqlite:///{Path(scratch) / f'{name}.db'}"
            results.append(run(url, "SQLite", Path(scratch) / "state"))
        if postgres:
            cluster = PostgresCluster()
            cluster.start()
            try:
                results.append(run(cluster.create_database(), "PostgreSQL", Path(scratch) / "pg"))
            finally:
                cluster.stop()
    return results
