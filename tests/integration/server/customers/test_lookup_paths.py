"""The CTI lookup's two paths give the same answers: PostgreSQL's one statement (JSON),
the rows path on PostgreSQL and the rows path on SQLite, over the same data and scopes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.customers import calls
from server.db import create_schema, make_engine
from server.models import Customer, CustomerContact, CustomerSite, Device, Incident
from server.scope import EVERYTHING, Scope
from tests.fixtures.customers import Auth
from tests.fixtures.customers import fleet as _fleet

T0 = datetime(2026, 11, 3, 8, 15, 30, 123456, tzinfo=UTC)

#: (ani, keyed-in customer number, scope): every branch of the lookup.
LOOKUPS: list[tuple[str, str | None, Scope]] = [
    ("+81 3 1234 5678", None, EVERYTHING),  # a device's phone and its customer's contact
    ("+81312340001", None, EVERYTHING),  # a device's own phone only
    ("03-9999-0000", None, EVERYTHING),  # a contact: the customer's devices
    ("+49 30 1234567", None, EVERYTHING),  # a contact of two customers: no customer
    ("+49301234567", "5000", EVERYTHING),  # ... narrowed by the keyed-in number
    ("+442071234567", None, EVERYTHING),  # nobody
    ("+442071234567", "4711", EVERYTHING),  # nobody, but the keyed-in customer
    ("+81312340009", None, EVERYTHING),  # a device of no customer
    ("+81 3 1234 5678", None, Scope(customers=frozenset({"4711"}))),
    ("+81 3 1234 5678", None, Scope(customers=frozenset({"5000"}))),  # outside: nothing
    ("+49 30 1234567", None, Scope(customers=frozenset({"5000"}))),
    ("+49 30 1234567", None, Scope(regions=frozenset({"EU"}))),
    ("03-9999-0000", None, Scope(regions=frozenset({"APAC"}))),
    ("03-9999-0000", None, Scope(regions=frozenset({"EU"}))),
    ("+49301234567", "4711", Scope(customers=frozenset({"5000"}))),  # keyed outside: ignored
    ("+81312345678", None, Scope(nothing=True)),
]


def _seed(engine: Engine) -> None:
    """Customers (contacts, sites), devices with health, open and closed incidents."""
    with Session(engine) as db:
        for number, name, country, region in (
            ("4711", "Sakura Clinic", "JP", "APAC"),
            ("5000", "Berlin Labs", "DE", "EU"),
            ("6000", "Spree Print", "DE", None),
        ):
            db.add(Customer(number=number, name=name, country=country, region=region,
                            created_at=T0))  # fmt: skip
        db.flush()
        for number, name, phone in (
            ("4711", "Dr. Tanaka", "+81312345678"),
            ("4711", "Front desk", "+81399990000"),
            ("5000", "Lab office", "+49301234567"),
            ("6000", "Print shop", "+49301234567"),
        ):
            email = f"{name[:3].lower()}@example.com"
            db.add(CustomerContact(customer_number=number, name=name, phone=phone,
                                   email=email, language="en"))  # fmt: skip
        for number, name in (("4711", "Sapporo"), ("4711", "Kobe"), ("4711", "Osaka")):
            db.add(CustomerSite(customer_number=number, name=name, country="JP"))
        devices: list[tuple[str, str | None, str | None, str | None]] = [
            ("imaging-a1", "4711", "+81312345678", None),
            ("imaging-a2", "4711", "+81312340001", "EU"),
            ("imaging-a3", "4711", None, None),
            ("mfp-b1", "5000", "+49309999999", None),
            ("mfp-b2", "5000", None, None),
            ("mfp-c1", "6000", None, "EU"),
            ("server-z9", None, "+81312340009", None),
        ]
        for index, (device_id, owner, own_phone, own_region) in enumerate(devices):
            db.add(
                Device(
                    id=device_id,
                    serial=f"SN{index}",
                    model="CT-80",
                    type=device_id.split("-")[0],
                    customer=owner or "walk-in",
                    customer_number=owner,
                    region=own_region,
                    contact_phone=own_phone,
                    contact_phone_e164=own_phone,
                    created_at=T0 + timedelta(minutes=index),
                    online=index % 2 == 0,
                    online_changed_at=T0 + timedelta(seconds=index, microseconds=7),
                    status="fault" if index % 2 else "ok",
                    health={"cpu": 12.5 + index, "disks": [{"mount": "/", "used": 0.25}]},
                    health_ts=T0,
                    inventory={"firmware": "1.0"} if index == 0 else None,
                    clock_offset_s=0.1 * index if index else None,
                )
            )
        db.flush()
        for index, (device_id, *_rest) in enumerate(devices):
            for k in range(4):
                opened = T0 - timedelta(hours=k % 2)  # ties in opened_at: the id decides
                db.add(
                    Incident(
                        device_id=device_id,
                        device_type=device_id.split("-")[0],
                        opened_at=opened,
                        down_at=opened - timedelta(minutes=5),
                        answered_at=opened if k else None,
                        closed_at=opened + timedelta(hours=1) if k == 3 else None,
                        channel="phone",
                        symptom=f'symptom {index}.{k} "quoted" ünïcode',
                        error_code=f"E{k}",
                        tier=1 + k % 3,
                        created_at=opened,
                        updated_at=opened,
                    )
                )
        db.commit()


@pytest.fixture
def engines(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Engine, Engine]]:
    """The same data on SQLite and on PostgreSQL."""
    made = (make_engine(f"sqlite:///{tmp_path / 'lookup.db'}"), make_engine(postgres_url))
    try:
        for engine in made:
            create_schema(engine)
            _seed(engine)
        yield made
    finally:
        for engine in made:
            engine.dispose()


def _answer(engine: Engine, lookup: tuple[str, str | None, Scope], one_statement: bool) -> Any:
    ani, keyed, scope = lookup
    with Session(engine) as session:
        match = calls.lookup(
            session, ani=ani, customer_number=keyed, default_region="JP", scope=scope,
            one_statement=one_statement,
        )  # fmt: skip
    return {
        "ani_e164": match.ani_e164,
        "customer": match.customer.model_dump(mode="json") if match.customer else None,
        "devices": [d.model_dump(mode="json") for d in match.devices],
        "open_incidents": [i.model_dump(mode="json") for i in match.open_incidents],
        "customer_numbers": match.customer_numbers,
    }


@pytest.mark.postgres
def test_one_statement_and_rows_give_the_same_answers_on_both_databases(
    engines: tuple[Engine, Engine],
) -> None:
    sqlite, postgres = engines
    seen_customers = seen_incidents = 0
    for lookup in LOOKUPS:
        rows_sqlite = _answer(sqlite, lookup, one_statement=False)
        rows_postgres = _answer(postgres, lookup, one_statement=False)
        one_postgres = _answer(postgres, lookup, one_statement=True)
        assert one_postgres == rows_postgres, lookup
        assert rows_postgres == rows_sqlite, lookup
        seen_customers += one_postgres["customer"] is not None
        seen_incidents += len(one_postgres["open_incidents"])
    # The cases above reach customers, devices and incidents, not only empty answers.
    assert seen_customers >= 8
    assert seen_incidents >= 20
    both = _answer(postgres, LOOKUPS[0], one_statement=True)
    assert both["customer"]["sites"] == [
        {"name": "Kobe", "country": "JP", "region": None},
        {"name": "Osaka", "country": "JP", "region": None},
        {"name": "Sapporo", "country": "JP", "region": None},
    ]
    assert [c["name"] for c in both["customer"]["contacts"]] == ["Dr. Tanaka", "Front desk"]
    assert both["customer"]["device_count"] == 3
    assert both["devices"][0]["health"] == {
        "cpu": 12.5,
        "disks": [{"mount": "/", "used": 0.25}],
    }
    assert both["devices"][0]["online_changed_at"] == "2026-11-03T08:15:30.123463Z"
    opened = [(i["opened_at"], i["id"]) for i in both["open_incidents"]]
    assert opened == sorted(opened, reverse=True)


@pytest.mark.postgres
def test_a_lookup_is_one_statement_on_postgresql(engines: tuple[Engine, Engine]) -> None:
    _sqlite, postgres = engines
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(postgres, "before_cursor_execute", count)
    try:
        answer = _answer(postgres, LOOKUPS[2], one_statement=True)
        assert len(statements) == 1
        assert answer["customer"]["number"] == "4711"
        assert len(answer["devices"]) == 3
        statements.clear()
        with Session(postgres) as session:
            calls.lookup(session, ani="+81312345678")  # PostgreSQL's default path
        assert len(statements) == 1
    finally:
        sa.event.remove(postgres, "before_cursor_execute", count)


def test_the_api_lookup_reads_in_autocommit_on_postgresql_and_hands_the_connection_back_reset(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    _fleet(client, auth)
    operator = auth("operator")
    postgres = engine.dialect.name == "postgresql"
    during: list[bool] = []
    returned: list[bool] = []

    def executing(conn: sa.Connection, *_args: Any) -> None:
        during.append(bool(getattr(conn.connection.dbapi_connection, "autocommit", False)))

    def checkin(dbapi_connection: Any, _record: Any) -> None:
        returned.append(bool(getattr(dbapi_connection, "autocommit", False)))

    client.get("/healthz")
    sa.event.listen(engine, "before_cursor_execute", executing)
    sa.event.listen(engine, "checkin", checkin)
    try:
        answer = client.get("/api/v1/lookup", params={"ani": "+4930 1234567"}, headers=operator)
    finally:
        sa.event.remove(engine, "before_cursor_execute", executing)
        sa.event.remove(engine, "checkin", checkin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["customer"]["number"] == "5000"
    # The token's check runs in a transaction; the lookup (PostgreSQL: one statement) not.
    assert during[0] is False
    assert during[-1] is postgres
    assert returned
    assert not any(returned)
    # The next request writes in a transaction as before.
    created = client.post(
        "/api/v1/incidents",
        json={"device_id": "imaging-b1", "opened_at": "2026-12-01T08:00:00Z"},
        headers=operator,
    )
    assert created.status_code == 201, created.text
