"""CTI lookup benchmark: who is calling, over 100,000 devices and 1,000,000 incidents.

Run: ``.venv/bin/python -m bench.lookup [--devices N] [--incidents N] [--no-postgres]
[--no-sqlite]``.

On SQLite (and PostgreSQL, a private cluster on a free port) the database gets
``--devices`` devices (one customer per 5 devices, a contact phone per
customer, an E.164 phone per device) and ``--incidents`` incidents (1 % open).
The real application runs in this process (``create_app`` and its lifespan)
and is called through Starlette's in-process client with a bearer token, so a
figure is the server's time: routing, auth, the lookup's queries and the JSON
answer, without a network. In the same run, the baseline: a plain indexed
``SELECT`` of the device with that phone (SQLAlchemy Core, no ORM). 300
lookups mix a device's own phone and a customer contact's, written as phone
systems send them (``+81 3 ...``, ``0081-3-...``); the target is p95 < 50 ms.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench import seeding
from bench.seeding import ms, p95
from server.models import Customer, CustomerContact, Device, Incident

RESULTS = Path(__file__).parent / "results" / "lookup.md"
PASSWORD = "bench lookup password"  # noqa: S105  (a throwaway user of a scratch database)


def _e164(index: int, base: int) -> str:
    return f"+813{base + index:08d}"


def populate(engine: Engine, devices: int, incidents: int, seed: int = 7) -> list[str]:
    """Customers, devices and incidents; the phones to look up (devices' and contacts')."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    # The user first, while the database is small: the server's own upkeep may hold
    # SQLite's write lock longer than the busy timeout once a million rows are in.
    seeding.add_bench_user(engine, PASSWORD)
    customers = max(1, devices // 5)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Customer.__table__),  # type: ignore[attr-defined]
            [
                {"number": str(100000 + c), "name": f"Customer {c}", "country": "JP",
                 "created_at": now}
                for c in range(customers)
            ],
        )  # fmt: skip
        connection.execute(
            sa.insert(CustomerContact.__table__),  # type: ignore[attr-defined]
            [
                {"customer_number": str(100000 + c), "name": "Front desk",
                 "phone": _e164(c, 50_000_000)}
                for c in range(customers)
            ],
        )  # fmt: skip
    rows = [
        seeding.device_row(
            index,
            now,
            customer=f"Customer {index // 5}",
            customer_number=str(100000 + index // 5),
            contact_phone=_e164(index, 10_000_000),
            contact_phone_e164=_e164(index, 10_000_000),
        )
        for index in range(devices)
    ]
    seeding.bulk_insert(engine, Device.__table__, rows)  # type: ignore[attr-defined]

    def incident_rows() -> Iterator[dict[str, Any]]:
        for number in range(incidents):
            device = rows[rng.randrange(devices)]
            opened = now - timedelta(hours=rng.randint(1, 20_000))
            yield seeding.incident_row(device, opened, closed=number % 100 != 0)

    seeding.bulk_insert(engine, Incident.__table__, incident_rows())  # type: ignore[attr-defined]
    seeding.analyze(engine)
    phones = []
    for number in range(300):
        if number % 2:
            e164 = _e164(rng.randrange(devices), 10_000_000)
        else:
            e164 = _e164(rng.randrange(customers), 50_000_000)
        national = "0" + e164[3:]
        phones.append(
            e164
            if number % 3 == 0
            else f"+81 {e164[3]} {e164[4:8]} {e164[8:]}"
            if number % 3 == 1
            else f"0081-{national[1]}-{national[2:6]}-{national[6:]}"
        )
    return phones


def plain_select(engine: Engine, e164: str) -> int:
    """The baseline: the device with that phone, by its index, with SQLAlchemy Core."""
    device = Device.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return len(
            connection.execute(sa.select(device).where(device.c.contact_phone_e164 == e164)).all()
        )


def run(database_url: str, label: str, devices: int, incidents: int, state: Path) -> dict[str, Any]:
    with seeding.served(database_url, state, access_log=False) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        started = time.perf_counter()
        phones = populate(engine, devices, incidents)
        populate_s = time.perf_counter() - started
        headers = seeding.bearer(client, PASSWORD)
        misses = 0
        for ani in phones[:60]:
            found = client.get("/api/v1/lookup", params={"ani": ani}, headers=headers)
            found.raise_for_status()
            if found.json()["customer"] is None:
                misses += 1
        index = iter(range(10**9))
        e164s = [
            "+" + "".join(ch for ch in p.replace("0081", "81", 1) if ch.isdigit()) for p in phones
        ]

        def lookup() -> None:
            ani = phones[next(index) % len(phones)]
            client.get("/api/v1/lookup", params={"ani": ani}, headers=headers)

        def select() -> None:
            plain_select(engine, e164s[next(index) % len(e164s)])

        statements: list[str] = []

        def count(*_args: Any) -> None:
            statements.append("")

        sa.event.listen(engine, "before_cursor_execute", count)
        for ani in phones[:20]:
            client.get("/api/v1/lookup", params={"ani": ani}, headers=headers)
        sa.event.remove(engine, "before_cursor_execute", count)
        trivial = seeding.timed(lambda: client.get("/healthz"), 200)
        looked = seeding.timed(lookup, 300)
        selected = seeding.timed(select, 300)
        load = os.getloadavg()[0]
    return {
        "label": label,
        "devices": devices,
        "incidents": incidents,
        "populate_s": populate_s,
        "misses": misses,
        "note": f", {misses}/60 lookups matched no customer",
        "trivial": trivial,
        "lookup": looked,
        "select": selected,
        "load": load,
        "statements": len(statements) / 20,
    }


def report(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown section of docs/benchmarks.md."""
    first = results[0]
    lines = [
        "## CTI lookup (`bench/lookup.py`)",
        "",
        f"`GET /api/v1/lookup?ani=` over {first['devices']:,} devices (an E.164 phone each, "
        f"one customer per 5 devices with a contact phone) and {first['incidents']:,} "
        "incidents (1 % open), measured in the server's own process through Starlette's "
        "in-process client (routing, bearer auth, the number parsed with `phonenumbers`, the "
        "device, contact, customer and open-incident queries, the JSON answer; no network), "
        "against a plain indexed SQLAlchemy Core `SELECT` of the device with that phone in the "
        "same run. 300 lookups, half a device's phone and half a customer contact's (then the "
        "answer carries the customer's devices), written as phone systems send them "
        "(`+81312345678`, `+81 3 1234 5678`, `0081-3-1234-5678`). Target: p95 < 50 ms.",
        "",
        "| database | lookup p50 | lookup p95 | p95 vs plain SELECT | plain SELECT p95 "
        "| trivial route p50 | SQL statements per lookup | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {ms(statistics.median(r['lookup']))} | {ms(p95(r['lookup']))} "
            f"| {p95(r['lookup']) / p95(r['select']):.1f}x | {ms(p95(r['select']))} "
            f"| {ms(statistics.median(r['trivial']))} | {r['statements']:.1f} | {r['load']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = seeding.command_line(__doc__, devices=100_000, incidents=1_000_000)
    results = seeding.on_each_database(
        "lookup",
        args,
        lambda url, label, state: run(url, label, args.devices, args.incidents, state),
    )
    seeding.publish(RESULTS, report(results))


if __name__ == "__main__":
    main()
