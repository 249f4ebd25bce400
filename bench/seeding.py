"""Scratch databases for the in-process benchmarks (desk, lookup, knowledge): seeding and timing.

Each benchmark runs the real application in its own process (:func:`served`) on SQLite
and, unless told not to, on a private PostgreSQL cluster (:func:`on_each_database`),
seeds the database in bulk (:func:`device_row`, :func:`incident_row`,
:func:`bulk_insert`, :func:`add_bench_user`), calls it with a bearer token
(:func:`bearer`) and times the server with :func:`timed` against baselines measured in
the same run; :func:`publish` writes and prints the results.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import chain, islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.config import ServerSettings
from server.main import create_app
from tests.fixtures.postgres import PostgresCluster

TYPES = ("mfp", "imaging", "server")
_BATCH = 20_000


def device_row(index: int, created_at: datetime, **fields: Any) -> dict[str, Any]:
    """Device number ``index`` (``mfp-000000``, ``imaging-000001``, ``server-000002``, ...),
    online, no telemetry counted; ``fields`` add to or replace its columns."""
    kind = TYPES[index % 3]
    row: dict[str, Any] = {
        "id": f"{kind}-{index:06d}",
        "serial": f"SN{index:07d}",
        "model": "bench",
        "type": kind,
        "customer": "bench",
        "created_at": created_at,
        "online": True,
        "clock_skewed": False,
        "telemetry_received": 0,
        "telemetry_missing": 0,
        "telemetry_rejected": 0,
    }
    row.update(fields)
    return row


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


def bulk_insert(engine: Engine, table: sa.Table, rows: Iterable[dict[str, Any]]) -> None:
    """``rows`` (all with the same columns) into ``table``: ``COPY`` on PostgreSQL, batches
    of ``executemany`` on SQLite, in one transaction."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    if engine.dialect.name == "postgresql":
        columns = list(first)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:  # type: ignore[attr-defined]
                copy_sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
                with cursor.copy(copy_sql) as copy:
                    for row in chain([first], rows):
                        copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()
        return
    with engine.begin() as connection:
        batch = [first, *islice(rows, _BATCH - 1)]
        while batch:
            connection.execute(sa.insert(table), batch)
            batch = list(islice(rows, _BATCH))


def analyze(engine: Engine) -> None:
    """Fresh planner statistics after a bulk load (PostgreSQL; SQLite needs none)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(sa.text("ANALYZE"))


def add_bench_user(engine: Engine, password: str) -> None:
    """The operator ``bench`` the benchmark logs in as."""
    with Session(engine) as session:
        crud.create_user(session, username="bench", role="operator", password=password)


@contextmanager
def served(database_url: str, state: Path, **settings: Any) -> Iterator[TestClient]:
    """The real application on ``database_url`` (no broker, no SSH gateway), in this
    process, started (lifespan) and stopped around the block;
    ``client.app.state.engine`` is its engine."""
    app = create_app(
        ServerSettings(
            database_url=database_url,
            broker_url="mqtt://127.0.0.1:1",
            state_dir=state,
            **{"ssh_gateway_port": -1, **settings},
        )
    )
    with TestClient(app) as client:
        yield client


def bearer(client: TestClient, password: str) -> dict[str, str]:
    """The headers of the operator ``bench`` (:func:`add_bench_user`) logged in."""
    answer = client.post("/api/v1/auth/token", data={"username": "bench", "password": password})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


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


def command_line(doc: str, *, sqlite: bool = True, **sizes: int) -> argparse.Namespace:
    """A benchmark's arguments: ``--NAME N`` for each of ``sizes`` (with its default),
    ``--no-postgres`` and (with ``sqlite``) ``--no-sqlite``. The app runs without a
    broker: logging is quieted to errors, its reconnect warnings are not the benchmark's
    business."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in sizes.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--no-postgres", action="store_true")
    if sqlite:
        parser.add_argument("--no-sqlite", action="store_true")
    logging.basicConfig(level=logging.ERROR)
    return parser.parse_args()


def on_each_database(
    name: str, args: argparse.Namespace, run: Callable[[str, str, Path], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``run(database_url, label, state_dir)`` on a scratch SQLite database (unless
    ``--no-sqlite``), then on a database of a private PostgreSQL cluster (unless
    ``--no-postgres``); their results. ``args`` are :func:`command_line`'s. Each result's
    ``populate_s`` (and its ``note``, if any) is printed as it comes."""
    sqlite = not getattr(args, "no_sqlite", False)
    postgres = not args.no_postgres
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
    for r in results:
        print(f"{r['label']}: populated in {r['populate_s']:.1f} s{r.get('note', '')}")
    return results


def publish(path: Path, text: str) -> None:
    """A benchmark's Markdown section into ``bench/results/`` (for ``run_all``) and on screen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print()
    print(text)
