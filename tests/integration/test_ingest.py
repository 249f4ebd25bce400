"""The ingest against a real Mosquitto and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import metrics
from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.ingest import IngestService
from server.models import Alert, Device, TelemetrySample
from server.models.telemetry import DeviceEventRecord
from server.upkeep import FleetUpkeep, Upkeep
from shared import topics
from shared.ids import new_id, utcnow
from shared.models import (
    CommandResult,
    DeviceEvent,
    DeviceState,
    Fault,
    ServerState,
    dump_message,
)
from tests.fixtures.ingest import counter, device, device_when, eventually, register, sample
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated, empty database of ``db_engine`` (SQLite, then PostgreSQL)."""
    return db_engine


@pytest.fixture
def settings(mosquitto: MosquittoBroker, database_url: str) -> ServerSettings:
    return ServerSettings(
        database_url=database_url,
        broker_url=mosquitto.url,
        ingest_flush_ms=20,
        offline_after_s=1.0,
    )


@pytest.fixture
async def ingest(settings: ServerSettings, engine: Engine) -> AsyncIterator[IngestService]:
    # A group of its own, so that nothing else on the broker shares the messages.
    service = IngestService(settings, engine, group=f"t{new_id()[:8]}")
    # The silent-device sweeper runs beside it as the app's upkeep runs it, only faster.
    fleet = FleetUpkeep(settings, engine, lock=service.db_lock, sweep_interval_s=0.2)
    upkeep = Upkeep(fleet.jobs())
    await service.start()
    await upkeep.start()
    await asyncio.wait_for(service.ready.wait(), 10)
    yield service
    await upkeep.stop()
    await service.stop()


@pytest.fixture
async def publisher(mosquitto: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        yield client


async def test_valid_samples_are_stored_and_update_the_device(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "mfp-0001")
    for seq in range(3):
        await publisher.publish(
            topics.telemetry("mfp-0001"), dump_message(sample("mfp-0001", seq)), qos=1
        )
    row = await eventually(device_when(engine, "mfp-0001", lambda d: d.telemetry_received == 3))
    assert row.last_seq == 2
    assert row.boot_id == "boot-1"
    assert row.status == "ok"
    assert row.health == {"cpu_percent": 5.0}
    assert row.telemetry_missing == 0
    assert row.online is True
    assert row.last_seen is not None
    assert row.clock_offset_s is not None
    assert abs(row.clock_offset_s) < 5
    assert row.clock_skewed is False
    with Session(engine) as db:
        stored = db.exec(select(TelemetrySample).order_by(sa.column("seq"))).all()
    assert [s.seq for s in stored] == [0, 1, 2]


async def test_bad_messages_are_rejected_and_counted_and_ingest_goes_on(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "mfp-0002", "mfp-0003")
    before = {
        reason: counter(metrics.INGEST_REJECTED, reason)
        for reason in ("bad_json", "bad_shape", "oversize", "device_mismatch", "unregistered")
    }
    topic = topics.telemetry("mfp-0002")
    await publisher.publish(topic, b"{not json", qos=1)
    await publisher.publish(topic, json.dumps({"v": 1, "device_id": "mfp-0002"}), qos=1)
    big = sample("mfp-0002", 0, metrics={f"m{i:05d}": 1.0 for i in range(6000)})
    assert len(dump_message(big)) > 64 * 1024
    await publisher.publish(topic, dump_message(big), qos=1)
    await publisher.publish(topic, dump_message(sample("mfp-0003", 0)), qos=1)
    await publisher.publish(
        topics.telemetry("mfp-9999"), dump_message(sample("mfp-9999", 0)), qos=1
    )
    await publisher.publish(topic, dump_message(sample("mfp-0002", 0)), qos=1)

    row = await eventually(device_when(engine, "mfp-0002", lambda d: d.telemetry_received))
    assert row.telemetry_received == 1
    assert row.telemetry_rejected == 4
    assert device(engine, "mfp-0003").telemetry_received == 0
    for reason in ("bad_json", "bad_shape", "oversize", "device_mismatch", "unregistered"):
        assert counter(metrics.INGEST_REJECTED, reason) == before[reason] + 1, reason
    with Session(engine) as db:
        assert db.exec(select(sa.func.count()).select_from(TelemetrySample)).one() == 1


async def test_gap_is_counted_missing_and_a_late_sample_uncounts_it(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "srv-0001")
    topic = topics.telemetry("srv-0001")
    for seq in (0, 1, 4):
        await publisher.publish(topic, dump_message(sample("srv-0001", seq)), qos=1)
    row = await eventually(device_when(engine, "srv-0001", lambda d: d.telemetry_received == 3))
    assert row.telemetry_missing == 2
    await publisher.publish(topic, dump_message(sample("srv-0001", 2)), qos=1)
    await publisher.publish(topic, dump_message(sample("srv-0001", 2)), qos=1)  # redelivery
    row = await eventually(device_when(engine, "srv-0001", lambda d: d.telemetry_received == 4))
    await asyncio.sleep(0.2)
    row = device(engine, "srv-0001")
    assert row.telemetry_received == 4
    assert row.telemetry_missing == 1
    assert row.last_seq == 4


async def test_birth_will_shutdown_and_silence_change_online_state(
    engine: Engine, ingest: IngestService, mosquitto: MosquittoBroker, publisher: aiomqtt.Client
) -> None:
    register(engine, "img-0001")
    state_topic = topics.state("img-0001")

    def birth() -> bytes:
        return dump_message(
            DeviceState(
                online=True,
                ts=utcnow(),
                boot_id="b",
                agent_version="1.2",
                capabilities=["via-sessions", "not-known-yet"],
            )
        )

    # A device whose process dies: the broker publishes the will it left.
    will = dump_message(DeviceState(online=False, ts=utcnow(), reason="connection_lost"))
    agent = subprocess.Popen(  # noqa: ASYNC220  (a short-lived child, killed below)
        [
            "mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port),
            "-t", topics.cmd("img-0001"), "-q", "1",
            "--will-topic", state_topic, "--will-payload", will.decode(),
            "--will-qos", "1", "--will-retain",
        ]
    )  # fmt: skip
    try:
        await asyncio.sleep(0.3)  # connected, will registered
        await publisher.publish(state_topic, birth(), qos=1, retain=True)
        row = await eventually(device_when(engine, "img-0001", lambda d: d.online))
        assert row.online_reason == "online"
        assert row.agent_version == "1.2"
        assert row.capabilities == "via-sessions"  # the known ones, kept on the row
    finally:
        agent.kill()
        agent.wait()
    row = await eventually(device_when(engine, "img-0001", lambda d: not d.online))
    assert row.online_reason == "connection_lost"

    await publisher.publish(state_topic, birth(), qos=1, retain=True)
    await eventually(lambda: device(engine, "img-0001").online)
    shutdown = DeviceState(online=False, ts=utcnow(), reason="shutdown")
    await publisher.publish(state_topic, dump_message(shutdown), qos=1, retain=True)
    row = await eventually(device_when(engine, "img-0001", lambda d: not d.online))
    assert row.online_reason == "shutdown"

    # Online again, then silent for longer than offline_after_s (1 s).
    await publisher.publish(state_topic, birth(), qos=1, retain=True)
    await eventually(lambda: device(engine, "img-0001").online)
    row = await eventually(device_when(engine, "img-0001", lambda d: not d.online), within=5)
    assert row.online_reason == "silent"
    with Session(engine) as db:
        history = db.exec(
            select(DeviceEventRecord.type, DeviceEventRecord.body)
            .where(DeviceEventRecord.device_id == "img-0001")
            .order_by(sa.column("id"))
        ).all()
    reasons = [(kind, body["reason"]) for kind, body in history]
    assert reasons == [
        ("online", "online"),
        ("offline", "connection_lost"),
        ("online", "online"),
        ("offline", "shutdown"),
        ("online", "online"),
        ("offline", "silent"),
    ]


async def test_server_announcement_is_retained(
    ingest: IngestService, mosquitto: MosquittoBroker
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topics.SERVER_STATE, qos=1)
        message = await asyncio.wait_for(anext(aiter(client.messages)), 5)
    assert message.retain
    state = ServerState.model_validate_json(bytes(message.payload))
    assert state.online is True
    assert state.instance == ingest.instance_id
    await ingest.stop()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topics.SERVER_STATE, qos=1)
        message = await asyncio.wait_for(anext(aiter(client.messages)), 5)
    assert ServerState.model_validate_json(bytes(message.payload)).online is False


async def test_faults_and_rules_open_and_clear_alerts(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "mfp-0004")
    topic = topics.telemetry("mfp-0004")
    fault = Fault(code="SC-541", severity="error", message="Fuser thermistor open")
    first = sample("mfp-0004", 0, status="fault", faults=[fault], metrics={"disk_percent:/": 95.0})
    await publisher.publish(topic, dump_message(first), qos=1)
    await publisher.publish(
        topic, dump_message(sample("mfp-0004", 1, status="fault", faults=[fault])), qos=1
    )

    def alerts() -> list[Alert]:
        with Session(engine) as db:
            return list(db.exec(select(Alert).order_by(sa.column("id"))).all())

    def two_alerts() -> list[Alert] | None:
        found = alerts()
        return found if len(found) == 2 else None

    opened = await eventually(two_alerts)
    assert {(a.source, a.code, a.metric, a.open) for a in opened} == {
        ("device", "SC-541", None, True),
        ("rule", "disk_full", "disk_percent:/", True),
    }
    later = utcnow() + timedelta(seconds=1)
    await publisher.publish(
        topic,
        dump_message(sample("mfp-0004", 2, ts=later, metrics={"disk_percent:/": 50.0})),
        qos=1,
    )

    def all_closed() -> list[Alert]:
        found = alerts()
        return found if found and not any(a.open for a in found) else []

    closed = await eventually(all_closed)
    assert all(a.cleared_at is not None for a in closed)
    assert len(closed) == 2

    raised = DeviceEvent(
        device_id="mfp-0004", ts=utcnow(), type="fault.raised", body=fault.model_dump()
    )
    await publisher.publish(topics.events("mfp-0004"), dump_message(raised), qos=1)
    await eventually(lambda: any(a.open for a in alerts()))
    cleared = DeviceEvent(
        device_id="mfp-0004", ts=utcnow(), type="fault.cleared", body={"code": "SC-541"}
    )
    await publisher.publish(topics.events("mfp-0004"), dump_message(cleared), qos=1)
    await asyncio.sleep(0.2)
    final = await eventually(all_closed)
    assert len(final) == 3
    assert device(engine, "mfp-0004").status == "ok"


async def test_skewed_clock_is_flagged(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "srv-0002")
    ahead = utcnow() + timedelta(seconds=300)
    await publisher.publish(
        topics.telemetry("srv-0002"),
        dump_message(sample("srv-0002", 0, ts=ahead, sent_at=ahead)),
        qos=1,
    )
    row = await eventually(device_when(engine, "srv-0002", lambda d: d.telemetry_received))
    assert row.clock_skewed is True
    assert row.clock_offset_s is not None
    assert 290 < row.clock_offset_s <= 300


async def test_a_sample_stamped_2099_or_1970_is_stored_at_receive_time_and_flagged(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    """One sample in 2099 used to freeze the device's health until 2099; 1970 was accepted."""
    register(engine, "mfp-0100")
    topic = topics.telemetry("mfp-0100")
    untrusted_before = counter(metrics.TELEMETRY_TS_UNTRUSTED)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    past = datetime(1970, 1, 2, tzinfo=UTC)
    sent = utcnow()
    await publisher.publish(
        topic, dump_message(sample("mfp-0100", 0, ts=future, metrics={"cpu_percent": 99.0})), qos=1
    )
    await publisher.publish(
        topic, dump_message(sample("mfp-0100", 1, ts=past, metrics={"cpu_percent": 98.0})), qos=1
    )
    await eventually(device_when(engine, "mfp-0100", lambda d: d.telemetry_received == 2))
    await publisher.publish(
        topic, dump_message(sample("mfp-0100", 2, metrics={"cpu_percent": 7.0})), qos=1
    )
    row = await eventually(device_when(engine, "mfp-0100", lambda d: d.telemetry_received == 3))
    # The genuine sample is the device's latest health: nothing froze it.
    assert row.health == {"cpu_percent": 7.0}
    assert row.health_ts is not None
    assert row.health_ts <= utcnow() + timedelta(seconds=5)
    with Session(engine) as db:
        stored = db.exec(
            select(TelemetrySample)
            .where(TelemetrySample.device_id == "mfp-0100")
            .order_by(sa.column("seq"))
        ).all()
    assert [(s.seq, s.ts_untrusted) for s in stored] == [(0, True), (1, True), (2, False)]
    for flagged in stored[:2]:
        # The server's receive time stands in for the device's impossible stamp.
        assert sent - timedelta(seconds=5) <= flagged.ts <= utcnow() + timedelta(seconds=1)
        assert flagged.ts == flagged.received_at
    assert counter(metrics.TELEMETRY_TS_UNTRUSTED) == untrusted_before + 2


async def test_a_future_health_ts_stored_before_the_fix_no_longer_freezes_the_device(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "mfp-0101")
    with Session(engine) as db:
        row = db.get(Device, "mfp-0101")
        assert row is not None
        row.health_ts = datetime(2099, 1, 1, tzinfo=UTC)
        row.status = "fault"
        db.add(row)
        db.commit()
    await publisher.publish(
        topics.telemetry("mfp-0101"), dump_message(sample("mfp-0101", 0)), qos=1
    )
    row = await eventually(device_when(engine, "mfp-0101", lambda d: d.telemetry_received))
    assert row.status == "ok"
    assert row.health_ts is not None
    assert row.health_ts.year < 2099


async def test_an_implausible_seq_jump_is_a_reset_not_a_trillion_missing(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "mfp-0102")
    topic = topics.telemetry("mfp-0102")
    missing_before = counter(metrics.TELEMETRY_MISSING)
    resets_before = counter(metrics.TELEMETRY_SEQ_RESETS)
    for seq in (0, 1, 10**12, 10**12 + 1, 2, 2**63 - 1):
        await publisher.publish(topic, dump_message(sample("mfp-0102", seq)), qos=1)
    row = await eventually(device_when(engine, "mfp-0102", lambda d: d.telemetry_received == 6))
    assert row.telemetry_missing == 0
    assert row.last_seq == 2**63 - 1
    assert counter(metrics.TELEMETRY_MISSING) == missing_before
    # 1 → 10^12, 10^12+1 → 2, 2 → 2^63-1: three broken numberings, none a gap.
    assert counter(metrics.TELEMETRY_SEQ_RESETS) == resets_before + 3
    with Session(engine) as db:
        seqs = db.exec(
            select(TelemetrySample.seq).where(TelemetrySample.device_id == "mfp-0102")
        ).all()
    # Exact integers on both databases (no float, no overflow).
    assert sorted(seqs) == [0, 1, 2, 10**12, 10**12 + 1, 2**63 - 1]
    assert all(type(seq) is int for seq in seqs)


@pytest.mark.parametrize("seq", [2**63, 2**64 + 1, -1, 1e19, 5.0, "5"])
async def test_a_seq_out_of_64_bits_or_not_an_integer_is_a_bad_shape(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client, seq: object
) -> None:
    register(engine, "mfp-0103")
    topic = topics.telemetry("mfp-0103")
    rejected_before = counter(metrics.INGEST_REJECTED, "bad_shape")
    bad = json.loads(dump_message(sample("mfp-0103", 0)))
    bad["seq"] = seq
    await publisher.publish(topic, json.dumps(bad), qos=1)
    await publisher.publish(topic, dump_message(sample("mfp-0103", 0)), qos=1)
    row = await eventually(device_when(engine, "mfp-0103", lambda d: d.telemetry_received))
    assert row.telemetry_rejected == 1
    assert row.telemetry_missing == 0
    assert counter(metrics.INGEST_REJECTED, "bad_shape") == rejected_before + 1


async def test_stale_retained_birth_does_not_roll_back_newer_state(
    settings: ServerSettings, engine: Engine, mosquitto: MosquittoBroker
) -> None:
    register(engine, "mfp-0005")
    old = datetime.now(UTC) - timedelta(hours=1)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        birth = DeviceState(online=True, ts=old, boot_id="b")
        await client.publish(topics.state("mfp-0005"), dump_message(birth), qos=1, retain=True)
    with Session(engine) as db:
        row = db.get(Device, "mfp-0005")
        assert row is not None
        row.online, row.online_reason = False, "silent"
        row.online_changed_at = utcnow() - timedelta(minutes=5)
        db.add(row)
        db.commit()
    service = IngestService(settings, engine, group=f"t{new_id()[:8]}")
    await service.start()
    try:
        await asyncio.wait_for(service.ready.wait(), 10)
        await asyncio.sleep(0.5)
    finally:
        await service.stop()
    row = device(engine, "mfp-0005")
    assert row.online is False
    assert row.online_reason == "silent"


def revoke(engine: Engine, device_id: str) -> None:
    """Mark a device revoked as ``fieldlink device revoke`` does (offline, reason revoked)."""
    with Session(engine) as db:
        row = db.get(Device, device_id)
        assert row is not None
        row.revoked_at = utcnow()
        row.online, row.online_reason, row.online_changed_at = False, "revoked", utcnow()
        db.add(row)
        db.commit()


async def test_revoked_device_is_refused_everything_and_stays_offline(
    settings: ServerSettings, engine: Engine, mosquitto: MosquittoBroker
) -> None:
    register(engine, "mfp-0100", "mfp-0101")
    revoke(engine, "mfp-0100")
    results: list[tuple[str, CommandResult]] = []
    before = counter(metrics.INGEST_REJECTED, "revoked")
    birth = DeviceState(online=True, ts=utcnow(), boot_id="b", agent_version="9.9")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        # A retained birth, replayed when the ingest subscribes.
        await client.publish(topics.state("mfp-0100"), dump_message(birth), qos=1, retain=True)
    service = IngestService(
        settings,
        engine,
        group=f"t{new_id()[:8]}",
        on_command_result=lambda device_id, result: results.append((device_id, result)),
    )
    await service.start()
    try:
        await asyncio.wait_for(service.ready.wait(), 10)
        fault = Fault(code="SC-541", severity="error", message="Fuser thermistor open")
        raised = DeviceEvent(
            device_id="mfp-0100", ts=utcnow(), type="fault.raised", body=fault.model_dump()
        )
        answer = CommandResult(id="c1", ok=True, ts=utcnow())
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(
                topics.telemetry("mfp-0100"),
                dump_message(sample("mfp-0100", 0, status="fault", faults=[fault])),
                qos=1,
            )
            await client.publish(topics.state("mfp-0100"), dump_message(birth), qos=1)
            await client.publish(topics.events("mfp-0100"), dump_message(raised), qos=1)
            await client.publish(topics.cmd_result("mfp-0100"), dump_message(answer), qos=1)
            # The same from a device in good standing, last: once it is stored, all is.
            await client.publish(topics.cmd_result("mfp-0101"), dump_message(answer), qos=1)
            await client.publish(
                topics.telemetry("mfp-0101"), dump_message(sample("mfp-0101", 0)), qos=1
            )
        await eventually(device_when(engine, "mfp-0101", lambda d: d.telemetry_received))
        await eventually(lambda: results)
    finally:
        await service.stop()
    row = device(engine, "mfp-0100")
    assert row.online is False
    assert row.online_reason == "revoked"
    assert row.telemetry_received == 0
    assert row.telemetry_rejected == 5  # retained birth, sample, birth, event, command result
    assert row.last_seen is None
    assert row.agent_version is None
    assert counter(metrics.INGEST_REJECTED, "revoked") == before + 5
    with Session(engine) as db:
        stored = db.exec(
            select(TelemetrySample.device_id).where(TelemetrySample.device_id == "mfp-0100")
        ).all()
        history = db.exec(
            select(DeviceEventRecord).where(DeviceEventRecord.device_id == "mfp-0100")
        ).all()
        alerts = db.exec(select(Alert).where(Alert.device_id == "mfp-0100")).all()
    assert (list(stored), list(history), list(alerts)) == ([], [], [])
    assert [(device_id, result.id) for device_id, result in results] == [("mfp-0101", "c1")]
    assert device(engine, "mfp-0101").online is True


async def test_revocation_applies_to_the_next_batch_without_a_restart(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    register(engine, "srv-0100")
    topic = topics.telemetry("srv-0100")
    await publisher.publish(topic, dump_message(sample("srv-0100", 0)), qos=1)
    await eventually(device_when(engine, "srv-0100", lambda d: d.telemetry_received == 1))
    revoke(engine, "srv-0100")
    for seq in (1, 2):
        await publisher.publish(topic, dump_message(sample("srv-0100", seq)), qos=1)
    row = await eventually(device_when(engine, "srv-0100", lambda d: d.telemetry_rejected == 2))
    assert row.telemetry_received == 1
    assert row.last_seq == 0
    assert row.online is False
    await asyncio.sleep(0.3)  # the sweeper leaves a revoked device alone
    assert device(engine, "srv-0100").online_reason == "revoked"


async def test_two_ingests_sharing_the_subscription_keep_exact_counts(
    settings: ServerSettings, database_url: str, publisher: aiomqtt.Client
) -> None:
    """As two server processes would: each its own engine, connections and writer."""
    engines = [make_engine(database_url) for _ in range(2)]
    create_schema(engines[0])
    register(engines[0], *(f"mfp-03{i:02d}" for i in range(4)))
    group = f"t{new_id()[:8]}"
    services = [IngestService(settings, e, group=group) for e in engines]
    try:
        for service in services:
            await service.start()
            await asyncio.wait_for(service.ready.wait(), 10)
        before = [counter(metrics.INGEST_MESSAGES, "stored")]
        for seq in range(100):
            for i in range(4):
                device_id = f"mfp-03{i:02d}"
                await publisher.publish(
                    topics.telemetry(device_id), dump_message(sample(device_id, seq)), qos=1
                )
        for i in range(4):
            row = await eventually(
                device_when(engines[0], f"mfp-03{i:02d}", lambda d: d.telemetry_received >= 100),
                within=30,
            )
            assert row.telemetry_received == 100
            assert row.telemetry_missing == 0
            assert row.last_seq == 99
        assert counter(metrics.INGEST_MESSAGES, "stored") == before[0] + 400
    finally:
        for service in services:
            await service.stop()
        for e in engines:
            e.dispose()


async def test_sqlite_wal_is_checkpointed_outside_the_ingest_commits(
    engine: Engine, ingest: IngestService, publisher: aiomqtt.Client
) -> None:
    """The ingest's commits never checkpoint (its connection has autocheckpoint off);
    its checkpoint thread does, so the log restarts from its beginning now and then
    (the WAL header's checkpoint sequence number goes up)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    assert engine.url.database is not None
    wal = Path(f"{engine.url.database}-wal")
    register(engine, "mfp-0310")
    topic = topics.telemetry("mfp-0310")

    def checkpoint_sequence() -> int:
        return int.from_bytes(wal.read_bytes()[12:16], "big")

    await publisher.publish(topic, dump_message(sample("mfp-0310", 0)), qos=1)
    await eventually(device_when(engine, "mfp-0310", lambda d: d.telemetry_received == 1))
    store_conn = ingest.store._conn
    assert store_conn is not None
    driver = store_conn.connection.driver_connection
    assert driver is not None
    assert driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    first = checkpoint_sequence()
    for seq in range(1, 100):
        await publisher.publish(topic, dump_message(sample("mfp-0310", seq)), qos=1)
        await eventually(
            device_when(engine, "mfp-0310", lambda d, seq=seq: d.telemetry_received > seq)
        )
        if checkpoint_sequence() != first:
            break
        await asyncio.sleep(0.1)
    assert checkpoint_sequence() != first


async def test_a_fresh_start_counts_no_rejection_and_a_bad_topic_still_counts(
    engine: Engine, settings: ServerSettings, publisher: aiomqtt.Client
) -> None:
    """The server's own announcement (``fieldlink/v1/_server/state``) comes back through the
    ``+/state`` filter at every start: it is ignored, not counted as a ``bad_topic``."""
    register(engine, "mfp-0100")
    bad_before = counter(metrics.INGEST_REJECTED, "bad_topic")
    ignored_before = counter(metrics.INGEST_MESSAGES, "ignored")
    service = IngestService(settings, engine, group=f"t{new_id()[:8]}")
    await service.start()
    try:
        await asyncio.wait_for(service.ready.wait(), 10)
        # Published after the announcement: once it is stored, the announcement was read.
        await publisher.publish(
            topics.telemetry("mfp-0100"), dump_message(sample("mfp-0100", 0)), qos=1
        )
        await eventually(device_when(engine, "mfp-0100", lambda d: d.telemetry_received == 1))
        assert counter(metrics.INGEST_REJECTED, "bad_topic") == bad_before
        assert counter(metrics.INGEST_MESSAGES, "ignored") >= ignored_before + 1

        await publisher.publish("fieldlink/v1/Not_A_Device/state", b"{}", qos=1)
        await publisher.publish(
            topics.telemetry("mfp-0100"), dump_message(sample("mfp-0100", 1)), qos=1
        )
        await eventually(device_when(engine, "mfp-0100", lambda d: d.telemetry_received == 2))
        assert counter(metrics.INGEST_REJECTED, "bad_topic") == bad_before + 1
    finally:
        await service.stop()
