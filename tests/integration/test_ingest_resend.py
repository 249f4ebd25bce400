"""The ingest notices lost telemetry and gets it back from the agent's resend window.

A subscriber that shares the server's subscription group (what a device could do
with the old, public group name) takes every other message of the fleet and
drops it, after the broker acknowledged it to the agent. The real ingest sees
the gaps in ``seq``, asks the device (``on_gap``; in the server a signed
``telemetry.resend`` command, whose handler calls the same
``Agent.request_resend``), and the real agent re-publishes what it sent on this
connection, until every sample is stored and nothing is counted missing.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from agent.health.collectors import Reading
from agent.health.outbox import MemoryOutbox
from agent.supervisor import Agent
from server.config import ServerSettings
from server.ingest import IngestService
from server.ingest.resend import GapResender
from server.models import Device
from shared import topics
from shared.broker_url import BrokerAddress
from shared.ids import new_id
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

DEVICE = "mfp-gap-1"
SAMPLES = 20


class Constant:
    name = "constant"

    async def collect(self) -> Reading:
        return Reading(metrics={"cpu_percent": 1.0})


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    with Session(db_engine) as db:
        db.add(Device(id=DEVICE, serial=DEVICE, model="X", type="mfp", customer="ACME"))
        db.commit()
    return db_engine


def _device(engine: Engine) -> Device:
    with Session(engine) as db:
        row = db.get(Device, DEVICE)
        assert row is not None
        return row


async def test_samples_a_rogue_sharer_swallowed_come_back_through_the_resend(
    mosquitto: MosquittoBroker, engine: Engine, database_url: str
) -> None:
    group = f"t{new_id()[:8]}"
    settings = ServerSettings(
        database_url=database_url, broker_url=mosquitto.url, ingest_flush_ms=20
    )
    agent = Agent(
        DEVICE,
        BrokerAddress(mosquitto.host, mosquitto.port, tls=False),
        [Constant()],
        MemoryOutbox(1_000),
        interval_s=0.05,
        keepalive_s=5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
    )
    asked: list[str] = []

    async def ask(device_id: str) -> None:
        # What the server's telemetry.resend command does on the device.
        asked.append(device_id)
        agent.request_resend()

    # A short interval (the server's is a minute), and patience while the rogue is
    # there: Mosquitto's strict round robin hands a resend's copies out in the same
    # alternation, so the rogue swallows the same samples again until it is gone.
    resender = GapResender(ask, min_interval_s=0.2, max_futile=1000)
    ingest = IngestService(settings, engine, group=group, on_gap=resender.on_gap)
    swallowed: list[bytes] = []
    await ingest.start()
    await asyncio.wait_for(ingest.ready.wait(), 10)
    running = asyncio.create_task(agent.run())
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as rogue:
            await rogue.subscribe(f"$share/{group}/{topics.PREFIX}/+/telemetry", qos=1)

            async def swallow() -> None:
                async for message in rogue.messages:
                    swallowed.append(bytes(message.payload))  # type: ignore[arg-type]

            reader = asyncio.create_task(swallow())
            for _ in range(200):
                if len(swallowed) >= SAMPLES // 2:
                    break
                await asyncio.sleep(0.05)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        # The rogue is gone (revoked, say); the ingest has gaps the broker acknowledged.
        row = await asyncio.to_thread(_device, engine)
        assert len(swallowed) >= SAMPLES // 2, "the rogue got nothing: the test shows nothing"
        for _ in range(300):
            row = await asyncio.to_thread(_device, engine)
            if row.telemetry_missing == 0 and row.telemetry_received == (row.last_seq or 0) + 1:
                break
            await asyncio.sleep(0.05)
        assert asked
        assert set(asked) == {DEVICE}
        assert agent.link.resent > 0
        # Every sample the rogue swallowed is stored now, and nothing is counted missing.
        assert row.telemetry_missing == 0
        assert row.last_seq is not None
        assert row.telemetry_received == row.last_seq + 1
    finally:
        agent.stop()
        await asyncio.wait_for(running, 10)
        await ingest.stop()
        await resender.stop()
