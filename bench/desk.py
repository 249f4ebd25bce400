"""Desk benchmark: the console's desk page over 10,000 devices, and the caller search.

Run: ``.venv/bin/python -m bench.desk [--devices N] [--no-postgres]``.

On SQLite (the demo's database) and on PostgreSQL (a private cluster on a free
port), the database gets 10,000 devices with customers, sites, contact phones
and a latest health sample, 300 open alerts and 500 incidents (60 open). The
real application runs in this process (``create_app``, its lifespan, the
console's cookie log-in) and is called through Starlette's in-process client,
so a figure is the server's time: routing, auth, queries, template rendering,
without a network. In the same run:

- the baselines: a trivial route (``/healthz``) through the same client, and
  a plain ``SELECT`` of the same rows the desk shows (the page of 50 devices
  and the count) with SQLAlchemy Core, no ORM, no rendering;
- ``GET /desk`` (the fleet's first page, open incidents, filters): median and
  p95 of 60 renders (target < 300 ms);
- the caller search the desk's box runs as the operator types
  (``GET /desk/find?q=``), and the API's ``GET /api/v1/devices?q=...&limit=8``,
  over 300 queries mixing phone numbers written as callers say them, serials,
  customers, sites and partial ids: median and p95 (target p95 < 100 ms),
  against the same plain ``SELECT``.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench import seeding
from bench.seeding import ms, p95
from server.models import Alert, Device, Incident

RESULTS = Path(__file__).parent / "results" / "desk.md"
PASSWORD = "bench desk password"  # noqa: S105  (a throwaway user of a scratch database)
CITIES = ("Berlin", "London", "Chicago", "Tokyo", "Seattle", "Madrid", "Lyon", "Oslo")
KINDS = ("Hospital", "Clinic", "Offices", "Logistics", "Legal", "School", "Bank")


def _phone(rng: random.Random) -> str:
    country = rng.choice(("+49 30", "+44 20", "+1 312", "+81 3", "+33 4", "+34 91"))
    return f"{country} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"


def populate(engine: Engine, devices: int, seed: int = 7) -> list[dict[str, Any]]:
    """Devices, alerts and incidents; the device rows (for the queries)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = []
    for index in range(devices):
        kind = seeding.TYPES[index % 3]
        city = rng.choice(CITIES)
        status = rng.choices(("ok", "warning", "fault"), weights=(90, 7, 3))[0]
        rows.append(
            seeding.device_row(
                index,
                now - timedelta(days=400),
                id=f"{kind}-{index:05d}",
                serial=f"SN{100000 + index}",
                model={"mfp": "Imagio MP 6055", "imaging": "Somatom", "server": "R650"}[kind],
                customer=f"{city} {rng.choice(KINDS)} {index % 900}",
                site=f"{city}, building {rng.choice('ABCDEFG')}, floor {rng.randint(0, 9)}",
                region=rng.choice(("emea", "americas", "apac")),
                contact_phone=_phone(rng),
                online=rng.random() < 0.93,
                last_seen=now - timedelta(seconds=rng.randint(0, 600)),
                status=status,
                health={"cpu_percent": rng.uniform(1, 90), "mem_percent": rng.uniform(20, 90)},
                health_ts=now,
            )
        )
    device_table = Device.__table__  # type: ignore[attr-defined]
    alert_table = Alert.__table__  # type: ignore[attr-defined]
    incident_table = Incident.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(sa.insert(device_table), rows)
        connection.execute(
            sa.insert(alert_table),
            [
                {
                    "device_id": rows[rng.randrange(devices)]["id"],
                    "source": "device",
                    "code": f"SC-{rng.randint(100, 999)}",
                    "severity": "error",
                    "message": "bench fault",
                    "raised_at": now - timedelta(hours=rng.randint(1, 48)),
                    "open": True,
                }
                for _ in range(300)
            ],
        )
        incidents = []
        for number in range(500):
            device = rows[rng.randrange(devices)]
            opened = now - timedelta(hours=rng.randint(1, 2000))
            closed = number >= 60
            incidents.append(
                seeding.incident_row(device, opened, closed=closed, symptom="bench incident")
            )
        connection.execute(sa.insert(incident_table), incidents)
    seeding.add_bench_user(engine, PASSWORD)
    return rows


def queries(rows: list[dict[str, Any]], count: int, seed: int = 11) -> list[str]:
    """What operators type: phones as callers say them, serials, customers, sites, ids."""
    rng = random.Random(seed)
    found: list[str] = []
    for number in range(count):
        row = rng.choice(rows)
        kind = number % 5
        if kind == 0:
            found.append(row["contact_phone"].replace("+", "00").replace(" ", "-"))
        elif kind == 1:
            found.append(row["contact_phone"][-9:])
        elif kind == 2:
            found.append(row["serial"])
        elif kind == 3:
            found.append(row["customer"].split()[0] + " " + row["customer"].split()[1])
        else:
            found.append(row["id"][:9])
    return found


def plain_select(engine: Engine, q: str | None) -> int:
    """The desk's rows with SQLAlchemy Core: a page of 50 and the count (the baseline)."""
    device = Device.__table__  # type: ignore[attr-defined]
    where: Any = sa.true()
    if q:
        pattern = f"%{q.lower()}%"
        where = sa.or_(
            sa.func.lower(device.c.id).like(pattern),
            sa.func.lower(device.c.serial).like(pattern),
            sa.func.lower(device.c.customer).like(pattern),
            sa.func.lower(device.c.site).like(pattern),
        )
    with engine.connect() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(device).where(where))
        rows = connection.execute(
            sa.select(device).where(where).order_by(device.c.id).limit(50)
        ).all()
        return int(total.scalar_one()) + len(rows)


def run(database_url: str, label: str, devices: int, state: Path) -> dict[str, Any]:
    with seeding.served(database_url, state) as client:
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        started = time.perf_counter()
        rows = populate(engine, devices)
        populate_s = time.perf_counter() - started
        answer = client.post("/login", data={"username": "bench", "password": PASSWORD})
        answer.raise_for_status()
        desk = client.get("/desk")
        assert desk.status_code == 200
        assert f"{devices:,} devices" in desk.text, desk.text[:500]
        typed = queries(rows, 300)
        misses = 0
        for q in typed[:50]:
            if not client.get("/api/v1/devices", params={"q": q, "limit": 8}).json()["count"]:
                misses += 1

        trivial = seeding.timed(lambda: client.get("/healthz"), 200)
        select_page = seeding.timed(lambda: plain_select(engine, None), 60)
        render = seeding.timed(lambda: client.get("/desk"), 60)
        index = iter(range(10**9))

        def search() -> None:
            q = typed[next(index) % len(typed)]
            client.get("/api/v1/devices", params={"q": q, "limit": 8})

        def select_search() -> None:
            plain_select(engine, typed[next(index) % len(typed)])

        def find() -> None:
            q = typed[next(index) % len(typed)]
            client.get("/desk/find", params={"q": q})

        searched = seeding.timed(search, 300)
        found = seeding.timed(find, 300)
        select_searched = seeding.timed(select_search, 300)
        load = os.getloadavg()[0]
    return {
        "label": label,
        "devices": devices,
        "populate_s": populate_s,
        "misses": misses,
        "note": f", {misses}/50 queries found nothing",
        "trivial": trivial,
        "select_page": select_page,
        "render": render,
        "search": searched,
        "find": found,
        "select_search": select_searched,
        "load": load,
    }


def report(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown section of docs/benchmarks.md."""
    devices = results[0]["devices"]
    lines = [
        "## Console desk (`bench/desk.py`)",
        "",
        f"The desk page and the caller search over {devices:,} devices (with customers, sites, "
        "phones and a health sample each, 300 open faults, 500 incidents), measured in the "
        "server's own process through Starlette's in-process client (routing, cookie auth, "
        "queries, Jinja2 rendering; no network), against two baselines in the same run: a "
        "trivial route (`/healthz`) and a plain SQLAlchemy Core `SELECT` of the same rows (the "
        "page of 50 and the count; for search, the same `LIKE` filter). The search mixes 300 "
        "queries an operator types: phone numbers as callers say them (`0044-20-...`, the last "
        "digits), serials, customer names and partial ids; the API also matches the phone by "
        "its digits, which the plain `SELECT` does not. The load average is the 1-minute one "
        "right after.",
        "",
        "| database | desk p50 | desk p95 | vs trivial route | vs plain SELECT "
        "| desk box p50 | desk box p95 | box p95 vs plain SELECT | API `q` p50 | API `q` p95 "
        "| trivial route p50 | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        desk50 = statistics.median(r["render"])
        lines.append(
            f"| {r['label']} | {ms(desk50)} | {ms(p95(r['render']))} "
            f"| {desk50 / statistics.median(r['trivial']):.1f}x "
            f"| {desk50 / statistics.median(r['select_page']):.1f}x "
            f"| {ms(statistics.median(r['find']))} | {ms(p95(r['find']))} "
            f"| {p95(r['find']) / p95(r['select_search']):.1f}x "
            f"| {ms(statistics.median(r['search']))} | {ms(p95(r['search']))} "
            f"| {ms(statistics.median(r['trivial']))} | {r['load']:.2f} |"
        )
    lines += [
        "",
        "The desk box is what the desk's search calls as the operator types (`GET /desk/find`: "
        "the first 8 matches, one scan that stops early, the phone matched by a loose digits "
        "`LIKE` and confirmed in Python); `GET /api/v1/devices?q=&limit=8` answers the same "
        "question with an exact count (two scans, the phone's separators stripped in SQL per "
        "row). Targets: the desk renders in under 300 ms of server time, the search answers in "
        "under 100 ms at p95.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = seeding.command_line(__doc__, sqlite=False, devices=10_000)
    results = seeding.on_each_database(
        "desk",
        args,
        lambda url, label, state: run(url, label, args.devices, state),
    )
    seeding.publish(RESULTS, report(results))


if __name__ == "__main__":
    main()
