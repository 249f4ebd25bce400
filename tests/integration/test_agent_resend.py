"""At-least-once to the server across a broker restart, with a real Mosquitto that persists.

Mosquitto 2.0 does not restore a shared subscription from persistence, so
after a restart the server's ingest gets nothing until it re-subscribes, while
the broker still acknowledges what the agents publish. A stand-in for the
server's ingest (shared subscription, retained announcement, as
``server.ingest.service`` does) shows that the samples an agent drained in that
gap reached nobody, and that the agent re-sends them all once the server
announces itself again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from agent.health.collectors import Reading
from agent.health.outbox import SqliteOutbox
from agent.supervisor import Agent
from shared import topics
from shared.broker_url import BrokerAddress
from shared.ids import new_id, utcnow
from shared.models import ServerState, dump_message
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

DEVICE = "mfp-resend-1"


class Constant:
    name = "constant"

    async def collect(self) -> Reading:
        return Reading(metrics={"cpu_percent": 1.0})


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(persistent=True) as mosquitto:
        yield mosquitto


class IngestStandIn:
    """What the server's ingest does on the wire: a shared subscription, a retained announcement."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.instance = f"ingest-{new_id()[:8]}"
        self.seqs: list[int] = []

    @asynccontextmanager
    async def connected(self, *, announce: bool = True) -> AsyncIterator[aiomqtt.Client]:
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=self.instance, keepalive=5
        ) as client:
            await client.subscribe([(f, 1) for f in topics.ingest_filters()])
            reader = asyncio.create_task(self._read(client))
            try:
                if announce:
                    await self.announce(client)
                yield client
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def announce(self, client: aiomqtt.Client) -> None:
        state = ServerState(online=True, ts=utcnow(), instance=self.instance)
        await client.publish(topics.SERVER_STATE, dump_message(state), qos=1, retain=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(topics.telemetry(DEVICE)):
                assert isinstance(message.payload, bytes)
                self.seqs.append(json.loads(message.payload)["seq"])


async def until(predicate: object, within: float, what: str) -> None:
    assert callable(predicate)
    for _ in range(int(within / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


async def test_samples_drained_while_no_server_was_subscribed_are_resent(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    outbox = await SqliteOutbox.open(tmp_path, 1_000)
    agent = Agent(
        DEVICE,
        BrokerAddress(broker.host, broker.port, tls=False),
        [Constant()],
        outbox,
        interval_s=0.2,
        keepalive_s=2,
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
    )
    ingest = IngestStandIn(broker)
    running = asyncio.create_task(agent.run())
    try:
        async with ingest.connected():
            await until(lambda: len(ingest.seqs) >= 3, 10, "3 samples before the outage")

        # The broker stops with the server gone; the agent keeps sampling into its outbox.
        await asyncio.to_thread(broker.stop)
        await until(lambda: not agent.link.connected.is_set(), 5, "the agent to see the outage")
        published_before = agent.link.published
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.start)

        # The agent reconnects first and drains its backlog: the broker acks it all...
        await until(lambda: agent.link.published >= published_before + 5, 10, "the drain")
        for _ in range(100):
            if await outbox.count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await outbox.count() == 0, "the backlog was not drained"
        gap_end = agent.samples.next_seq
        received_before = set(ingest.seqs)

        # ...but the server's shared subscription was not restored: it got none of it.
        async with ingest.connected(announce=False) as client:
            await until(lambda: len(ingest.seqs) > len(received_before), 5, "a live sample")
            missed = set(range(gap_end)) - set(ingest.seqs)
            assert missed, "the backlog reached a subscriber although none was there"
            assert agent.link.resent == 0

            # The announcement is the end-to-end signal: the agent sends it all again.
            await ingest.announce(client)
            await until(lambda: missed <= set(ingest.seqs), 10, f"the resend of {sorted(missed)}")
            await until(lambda: agent.link.resent >= len(missed), 5, "the resend count")
            last = agent.samples.next_seq
            await until(lambda: set(range(last)) <= set(ingest.seqs), 5, "every sample")
        # Resent in order: the samples of the gap come back oldest first.
        resent = [seq for seq in ingest.seqs if seq in missed]
        assert resent[: len(missed)] == sorted(missed)
        # Still kept for a later resend, within the window; nothing waits unsent.
        assert await outbox.sent_count() >= len(missed)
    finally:
        agent.stop()
        await asyncio.wait_for(running, 10)
        await outbox.close()
