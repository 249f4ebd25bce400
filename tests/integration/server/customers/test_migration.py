"""Migration 0012 turns free-text device customers into customer rows, losing no device."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from server.db import MIGRATIONS_DIR, make_engine


def _upgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _downgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


DEVICES = [
    ("mfp-1", "Acme Offices", "emea", "+49 30 1234567"),
    ("mfp-2", "Acme Offices", None, "0049 30 7654321"),
    ("mfp-3", "Zenith Hospital", "apac", "03-1234-5678"),
    ("mfp-4", "Ärzte & Co =SUM(A1)", None, None),
    ("mfp-5", "Zenith Hospital", "apac", "+1 555 0100"),
]


def test_free_text_customers_become_customer_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        _upgrade(engine, "0011")
        now = datetime.now(UTC).replace(tzinfo=None)
        with engine.begin() as connection:
            for device_id, customer, region, phone in DEVICES:
                connection.execute(
                    sa.text(
                        "INSERT INTO device (id, serial, model, type, customer, region, "
                        "contact_phone, created_at, online, clock_skewed, telemetry_received, "
                        "telemetry_missing, telemetry_rejected) VALUES (:id, :id, 'm', 'mfp', "
                        ":customer, :region, :phone, :now, false, false, 0, 0, 0)"
                    ),
                    {
                        "id": device_id,
                        "customer": customer,
                        "region": region,
                        "phone": phone,
                        "now": now,
                    },
                )
        _upgrade(engine, "head")
        with engine.connect() as connection:
            customers = connection.execute(
                sa.text("SELECT number, name, region FROM customer ORDER BY number")
            ).all()
            devices = connection.execute(
                sa.text(
                    "SELECT id, customer, customer_number, contact_phone_e164 FROM device "
                    "ORDER BY id"
                )
            ).all()
        assert [tuple(c) for c in customers] == [
            ("100001", "Acme Offices", "emea"),
            ("100002", "Zenith Hospital", "apac"),
            ("100003", "Ärzte & Co =SUM(A1)", None),
        ]
        assert [tuple(d) for d in devices] == [
            ("mfp-1", "Acme Offices", "100001", "+49301234567"),
            ("mfp-2", "Acme Offices", "100001", "+49307654321"),
            ("mfp-3", "Zenith Hospital", "100002", None),  # local: no country known yet
            ("mfp-4", "Ärzte & Co =SUM(A1)", "100003", None),
            ("mfp-5", "Zenith Hospital", "100002", None),  # not a valid number
        ]
        _downgrade(engine, "0011")
        with engine.connect() as connection:
            left = connection.execute(sa.text("SELECT id, customer FROM device ORDER BY id")).all()
        assert [tuple(d) for d in left] == [(d[0], d[1]) for d in DEVICES]
        assert "customer" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
