"""Knowledge search benchmark: ``GET /api/v1/knowledge?q=`` over a million resolution notes.

Run: ``.venv/bin/python -m bench.knowledge [--incidents N] [--articles N] [--no-sqlite]
[--no-postgres]``.

The database (SQLite, and PostgreSQL in a private cluster on a free port) gets
``--incidents`` closed incidents, each with a resolution note written from a
small vocabulary (a verb, a part and its part number, an error code, a few
words more) and ``--articles`` knowledge articles. Rows go in directly, not
through the API: ``COPY`` on PostgreSQL, ``executemany`` on SQLite (its FTS5
triggers index the notes as they go in). The real application runs in this
process and is called through Starlette's in-process client with a bearer
token, so a figure is the server's time: routing, auth, the full-text search,
the hits' rows, the JSON answer. In the same run, the baseline: a plain indexed
``SELECT`` of 20 incidents of one device (SQLAlchemy Core, the page size of the
search). The queries mix a rare part number (a handful of hits), an error code
(2.5 % of the notes), a common word (one note in eight), two words, and a word
no note has. Target: p95 < 100 ms at 1,000,000 incidents.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench import seeding
from bench.seeding import ms, p95
from server.models import Device, Incident, KnowledgeArticle

RESULTS = Path(__file__).parent / "results" / "knowledge.md"
PASSWORD = "bench knowledge password"  # noqa: S105  (a throwaway user of a scratch database)
DEVICES = 1000
VERBS = ("Replaced", "Cleaned", "Reseated", "Adjusted", "Updated firmware of", "Recalibrated")
PARTS = (
    "fuser unit", "drum cartridge", "transfer belt", "pickup roller", "toner sensor",
    "main board", "power supply", "scanner lamp", "duplex unit", "paper tray",
    "cooling fan", "hard disk",
)  # fmt: skip
EXTRA = (
    "customer confirmed", "test page fine", "counter reset", "remote session",
    "error cleared", "advised on paper quality", "scheduled follow-up", "no further fault",
)  # fmt: skip
CODES = tuple(f"SC-{500 + n}" for n in range(40))
QUERIES = ("P-04711", "SC-523", "fuser", "drum reseated", "nosuchword")


def _note(rng: random.Random, rare: bool = False) -> tuple[str, str]:
    code = rng.choice(CODES)
    part = rng.choice(PARTS)
    number = 4711 if rare else rng.randrange(100_000)
    text = (
        f"{rng.choice(VERBS)} {part} (part P-{number:05d}), "
        f"{rng.choice(EXTRA)}; {code} {rng.choice(EXTRA)}"
    )
    return code, text


def _incidents(count: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for number in range(count):
        opened = now - timedelta(hours=rng.randint(4, 20_000))
        code, note = _note(rng, rare=number % 100_000 == 50_000)  # 10 more per million
        device = number % DEVICES
        kind = seeding.TYPES[device % 3]
        yield {
            "device_id": f"{kind}-{device:06d}",
            "device_type": kind,
            "opened_at": opened,
            "down_at": opened,
            "restored_at": opened + timedelta(hours=2),
            "closed_at": opened + timedelta(hours=3),
            "resolution": "remote" if number % 4 else "dispatch",
            "channel": "phone",
            "error_code": code,
            "resolution_note": note,
            "remote_session_used": bool(number % 4),
            "tier": 1,
            "created_at": opened,
            "updated_at": opened,
        }


def populate(engine: Engine, incidents: int, articles: int, seed: int = 11) -> None:
    """Devices, closed incidents with resolution notes, knowledge articles."""
    seeding.add_bench_user(engine, PASSWORD)
    now = datetime.now(UTC)
    rng = random.Random(seed)
    seeding.bulk_insert(
        engine,
        Device.__table__,  # type: ignore[attr-defined]
        (seeding.device_row(n, now) for n in range(DEVICES)),
    )
    with engine.begin() as connection:  # JSON columns: not for COPY's text rows
        connection.execute(
            sa.insert(KnowledgeArticle.__table__),  # type: ignore[attr-defined]
            [
                {"title": f"{rng.choice(PARTS).capitalize()} faults, {code}",
                 "error_codes": [code], "models": ["bench"], "keywords": f"{code} bench",
                 "steps": " ".join(_note(rng)[1] for _ in range(5)), "created_by": "bench",
                 "created_at": now, "updated_at": now}
                for code in (rng.choice(CODES) for _ in range(articles))
            ],
        )  # fmt: skip
    seeding.bulk_insert(engine, Incident.__table__, _incidents(incidents, seed))  # type: ignore[attr-defined]
    seeding.analyze(engine)


def run(
    database_url: str, label: str, incidents: int, articles: int, state: Path
) -> dict[str, Any]:
    with seeding.served(database_url, state, access_log=False) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        started = time.perf_counter()
        populate(engine, incidents, articles)
        populate_s = time.perf_counter() - started
        headers = seeding.bearer(client, PASSWORD)
        counts = {}
        for q in QUERIES:
            answer = client.get("/api/v1/knowledge", params={"q": q}, headers=headers)
            answer.raise_for_status()
            counts[q] = answer.json()["count"]
        incident = Incident.__table__  # type: ignore[attr-defined]
        index = iter(range(10**9))

        def search() -> None:
            q = QUERIES[next(index) % len(QUERIES)]
            client.get("/api/v1/knowledge", params={"q": q}, headers=headers)

        def select() -> None:
            device = f"mfp-{(next(index) * 3) % (DEVICES - 1):06d}"
            with engine.connect() as connection:
                connection.execute(
                    sa.select(incident).where(incident.c.device_id == device).limit(20)
                ).all()

        def asked(q: str) -> Callable[[], Any]:
            return lambda: client.get("/api/v1/knowledge", params={"q": q}, headers=headers)

        per_query = {q: seeding.timed(asked(q), 20) for q in QUERIES}
        searched = seeding.timed(search, 200)
        selected = seeding.timed(select, 200)
        load = os.getloadavg()[0]
    return {
        "label": label,
        "incidents": incidents,
        "articles": articles,
        "populate_s": populate_s,
        "counts": counts,
        "per_query": per_query,
        "search": searched,
        "select": selected,
        "load": load,
    }


def report(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown section of docs/benchmarks.md."""
    first = results[0]
    lines = [
        "## Knowledge search (`bench/knowledge.py`)",
        "",
        f"`GET /api/v1/knowledge?q=` over {first['incidents']:,} closed incidents with "
        f"resolution notes and {first['articles']:,} articles, measured in the server's own "
        "process through Starlette's in-process client (routing, bearer auth, the full-text "
        "search: FTS5 on SQLite, GIN-indexed `tsvector` on PostgreSQL; the hits' rows, the "
        "JSON answer; no network), against a plain indexed SQLAlchemy Core `SELECT` of 20 "
        "incidents of one device in the same run. 200 searches cycling through "
        + ", ".join(f"`{q}`" for q in QUERIES)
        + ". Target: p95 < 100 ms at 1,000,000 incidents.",
        "",
        "| database | incidents | search p50 | search p95 | p95 vs plain SELECT "
        "| plain SELECT p95 | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['incidents']:,} | {ms(statistics.median(r['search']))} "
            f"| {ms(p95(r['search']))} | {p95(r['search']) / p95(r['select']):.1f}x "
            f"| {ms(p95(r['select']))} | {r['load']:.2f} |"
        )
    lines += ["", "Per query (20 runs each): hits, p50 / p95.", ""]
    lines.append("| database | " + " | ".join(f"`{q}`" for q in QUERIES) + " |")
    lines.append("|---|" + "---|" * len(QUERIES))
    for r in results:
        cells = [
            f"{r['counts'][q]:,} hits, {ms(statistics.median(r['per_query'][q]))} / "
            f"{ms(p95(r['per_query'][q]))}"
            for q in QUERIES
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = seeding.command_line(__doc__, incidents=1_000_000, articles=2_000)
    results = seeding.on_each_database(
        "knowledge",
        args,
        lambda url, label, state: run(url, label, args.incidents, args.articles, state),
    )
    seeding.publish(RESULTS, report(results))


if __name__ == "__main__":
    main()
