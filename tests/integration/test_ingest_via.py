"""What site gateways publish for the devices they watch, through the real ingest store.

On SQLite and PostgreSQL (the ``database_url`` params): messages on a gateway's
via topics are validated like a device's own, applied like them when the registry
binds the device to that gateway, and refused as ``not_bound`` (counted) when it
does not; inventory reports, unreachable devices, and a gateway's death.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import crud, metrics
from server.config import ServerSettings
from server.ingest.items import BatchResult, IngestItem
from server.ingest.maintenance import mark_silent
from server.ingest.store import IngestStore
from server.ingest.validate import Validator
from server.ingest.writer import count_batch
from server.models import Alert, DeviceCreate
from shared import topics
from shared.ids import utcnow
from shared.models import DeviceEvent, DeviceState, Fault, HealthSample, dump_message

pytestmark = pytest.mark.integration

NOW = utcnow()


@pytest.fixture(autouse=True)
def _now() -> None:
    """``NOW`` is each test's start: the ingest trusts recent samples only, and a suite
    collected long before a test runs (xdist, a long run) would make them old."""
    global NOW  # the helpers below read the module's NOW
    NOW = utcnow()


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    with Session(db_engine) as session:
        for gateway in ("server-gw-a", "server-gw-b"):
            crud.create_device(
                session,
                data=DeviceCreate(
                    id=gateway, serial=gateway, model="PC", type="server", customer="Acme"
                ),
            )
        for printer, via in (("mfp-a", "server-gw-a"), ("mfp-b", "server-gw-b")):
            crud.create_device(
                session,
                data=DeviceCreate(
                    id=printer, serial=f"SN-{printer}", model="MP", type="mfp",
                    customer="Acme", via=via,
                ),
            )  # fmt: skip
    return db_engine


def _sample(device_id: str, seq: int, **fields: Any) -> bytes:
    values: dict[str, Any] = {
        "device_id": device_id,
        "boot_id": "b1",
        "seq": seq,
        "ts": NOW + timedelta(seconds=seq),
        "status": "warning",
        "metrics": {"mfp.toner_black_percent": 4.0},
        "faults": [Fault(code="TONER-LOW-BLACK", severity="warning", message="black low")],
    }
    values.update(fields)
    return dump_message(HealthSample(**values))


def _state(online: bool, reason: str | None = None) -> bytes:
    return dump_message(DeviceState(online=online, ts=utcnow(), boot_id="b1", reason=reason))


def _write(engine: Engine, messages: list[tuple[str, bytes]]) -> BatchResult:
    validate = Validator(ServerSettings(database_url="sqlite://"))
    items: list[IngestItem] = []
    for topic, payload in messages:
        item = validate(topic.encode(), payload, retain=False, received_at=utcnow())
        assert item is not None
        items.append(item)
    store = IngestStore(engine, ServerSettings(database_url="sqlite://"))
    try:
        result = store.write(items)
    finally:
        store.close()
    count_batch(result, len(items), 0.0, 0.0)
    return result


def _rejected(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("fieldlink_ingest_rejected_total", {"reason": reason})
    return value or 0.0


def test_a_gateway_speaks_for_its_own_watched_device_only(engine: Engine) -> None:
    before = _rejected("not_bound")
    result = _write(
        engine,
        [
            (topics.via_topic("server-gw-a", "mfp-a", "state"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "telemetry"), _sample("mfp-a", 0)),
            # Gateway A speaking for gateway B's printer, and for a gateway.
            (topics.via_topic("server-gw-a", "mfp-b", "telemetry"), _sample("mfp-b", 0)),
            (topics.via_topic("server-gw-a", "mfp-b", "state"), _state(True)),
            (topics.via_topic("server-gw-a", "server-gw-b", "state"), _state(False)),
            # A watched device's own topic: nobody should hold its certificate.
            (topics.telemetry("mfp-b"), _sample("mfp-b", 1)),
        ],
    )
    assert result.not_bound == 4
    assert _rejected("not_bound") - before == 4
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert mfp_a.online
        assert mfp_a.telemetry_received == 1
        assert mfp_a.health == {"mfp.toner_black_percent": 4.0}
        assert mfp_a.status == "warning"
        codes = [a.code for a in session.exec(select(Alert).where(Alert.device_id == "mfp-a"))]
        assert codes == ["TONER-LOW-BLACK"]
        mfp_b = crud.get_device(session, device_id="mfp-b")
        assert not mfp_b.online
        assert mfp_b.health is None
        assert mfp_b.telemetry_received == 0
        assert mfp_b.telemetry_rejected == 3
        assert crud.get_device(session, device_id="server-gw-b").telemetry_rejected == 1


def test_inventory_unreachable_and_the_gateway_going_offline(engine: Engine) -> None:
    inventory = DeviceEvent(
        device_id="mfp-a",
        ts=NOW,
        type="inventory.reported",
        body={"sys_descr": "MP 6055", "serial": "OTHER-1", "model": "MP 6055", "x": "dropped"},
    )
    _write(
        engine,
        [
            (topics.state("server-gw-a"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "state"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "events"), dump_message(inventory)),
        ],
    )
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert mfp_a.inventory == {"sys_descr": "MP 6055", "serial": "OTHER-1", "model": "MP 6055"}
        assert mfp_a.online
    _write(
        engine, [(topics.via_topic("server-gw-a", "mfp-a", "state"), _state(False, "unreachable"))]
    )
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert (mfp_a.online, mfp_a.online_reason) == (False, "unreachable")
        assert crud.get_device(session, device_id="server-gw-a").online
    _write(engine, [(topics.via_topic("server-gw-a", "mfp-a", "state"), _state(True))])
    # The gateway's last will: the printer it watches goes offline with it.
    _write(engine, [(topics.state("server-gw-a"), _state(False, "connection_lost"))])
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert (mfp_a.online, mfp_a.online_reason) == (False, "gateway_offline")
        gateway = crud.get_device(session, device_id="server-gw-a")
        assert (gateway.online, gateway.online_reason) == (False, "connection_lost")
    # In the same batch as one of its printer's messages, too.
    _write(
        engine,
        [
            (topics.state("server-gw-a"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "state"), _state(True)),
            (topics.state("server-gw-a"), _state(False, "connection_lost")),
        ],
    )
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert (mfp_a.online, mfp_a.online_reason) == (False, "gateway_offline")


def test_a_silent_gateway_takes_its_watched_devices_offline(engine: Engine) -> None:
    _write(
        engine,
        [
            (topics.state("server-gw-a"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "state"), _state(True)),
            (topics.via_topic("server-gw-a", "mfp-a", "telemetry"), _sample("mfp-a", 0)),
        ],
    )
    with Session(engine) as session:
        gateway = crud.get_device(session, device_id="server-gw-a")
        gateway.last_seen = NOW - timedelta(hours=1)
        session.add(gateway)
        session.commit()
    # Only the gateway is silent (the printer's sample is recent); it goes with it.
    assert mark_silent(engine, 600, utcnow()) == ["server-gw-a"]
    with Session(engine) as session:
        mfp_a = crud.get_device(session, device_id="mfp-a")
        assert (mfp_a.online, mfp_a.online_reason) == (False, "gateway_offline")
