"""Messages are acknowledged only once committed: a crashed ingest loses nothing.

The ingest runs in a child process that is killed (SIGKILL) while its batch
waits for the database; a new ingest with the same ``instance_id`` (the same
persistent broker session) gets the unacknowledged messages again, and those
published while no ingest ran.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from sqlmodel import Session

from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.ingest import IngestService
from server.models import Device
from shared import topics
from shared.ids import new_id
from shared.models import dump_message
from tests.fixtures.ingest import counter, device_when, eventually, register, sample
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

CHILD = """
import asyncio, sys
from server.config import ServerSettings
from server.db import make_engine
from server.ingest import IngestService

async def main() -> None:
    url, broker, instance, group = sys.argv[1:5]
    settings = ServerSettings(database_url=url, broker_url=broker, instance_id=instance)
    service = IngestService(settings, make_engine(url), group=group)
    await service.start()
    await asyncio.wait_for(service.ready.wait(), 10)
    print("ready", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_unacknowledged_messages_come_again_after_a_crash(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    from server import metrics

    url = f"sqlite:///{tmp_path / 'fieldlink.db'}"
    engine = make_engine(url)
    create_schema(engine)
    register(engine, "mfp-0200")
    instance, group = f"crash-{new_id()[:8]}", f"t{new_id()[:8]}"
    child = subprocess.Popen(  # noqa: ASYNC220  (killed below)
        [sys.executable, "-c", CHILD, url, mosquitto.url, instance, group],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    # The database's write lock, held so that the child's first batch cannot commit.
    blocker = sqlite3.connect(tmp_path / "fieldlink.db", isolation_level=None)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.strip() == "ready"
        blocker.execute("BEGIN IMMEDIATE")
        topic = topics.telemetry("mfp-0200")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for seq in range(5):
                await client.publish(topic, dump_message(sample("mfp-0200", seq)), qos=1)
            await asyncio.sleep(0.5)  # delivered to the child, which waits for the lock
            child.send_signal(signal.SIGKILL)
            child.wait()
            # Published while no ingest runs: the broker queues it in the session.
            await client.publish(topic, dump_message(sample("mfp-0200", 5)), qos=1)
        blocker.execute("ROLLBACK")
        stored = blocker.execute("SELECT count(*) FROM telemetry_sample").fetchone()[0]
        assert stored == 0
    finally:
        blocker.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    duplicates = counter(metrics.INGEST_MESSAGES, "duplicate")
    settings = ServerSettings(database_url=url, broker_url=mosquitto.url, instance_id=instance)
    service = IngestService(settings, engine, group=group)
    await service.start()
    try:
        row = await eventually(device_when(engine, "mfp-0200", lambda d: d.telemetry_received >= 6))
    finally:
        await service.stop()
    assert row.telemetry_received == 6
    assert row.telemetry_missing == 0
    assert row.last_seq == 5
    assert counter(metrics.INGEST_MESSAGES, "duplicate") == duplicates
    with Session(engine) as db:
        assert db.get(Device, "mfp-0200") is not None
    engine.dispose()


async def test_a_stopped_persistent_instance_gets_what_was_published_meanwhile(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    url = f"sqlite:///{tmp_path / 'fieldlink.db'}"
    engine = make_engine(url)
    create_schema(engine)
    register(engine, "mfp-0201")
    settings = ServerSettings(
        database_url=url, broker_url=mosquitto.url, instance_id=f"keep-{new_id()[:8]}"
    )
    group = f"t{new_id()[:8]}"
    topic = topics.telemetry("mfp-0201")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        first = IngestService(settings, engine, group=group)
        await first.start()
        await asyncio.wait_for(first.ready.wait(), 10)
        await client.publish(topic, dump_message(sample("mfp-0201", 0)), qos=1)
        await eventually(device_when(engine, "mfp-0201", lambda d: d.telemetry_received == 1))
        await first.stop()
        for seq in (1, 2):
            await client.publish(topic, dump_message(sample("mfp-0201", seq)), qos=1)
    second = IngestService(settings, engine, group=group)
    await second.start()
    try:
        row = await eventually(device_when(engine, "mfp-0201", lambda d: d.telemetry_received == 3))
    finally:
        await second.stop()
    assert row.last_seq == 2
    engine.dispose()
