"""A site gateway re-publishes its watched devices' samples when a server announces itself.

After a broker restart the gateway may reconnect and drain its backlog before the
server's shared subscription is back: those samples are acknowledged by the broker
and reach nobody. The server's announcement is the signal to publish them again,
with what the previous connection sent (acknowledged just before the broker went
away). The broker is the stand-in of ``test_resend.py``; the real broker and
server are in ``tests/integration/test_site_gateway.py``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from agent.health.gateway import SiteGateway
from agent.health.outbox import MemoryOutbox
from shared import topics
from tests.fixtures.link_harness import T0, AckingBroker, Harness, stop, until


class ViaBroker(AckingBroker):
    """Also records each telemetry's topic, to check the via topic."""

    def __init__(self) -> None:
        super().__init__()
        self.topics: list[str] = []

    async def publish(self, topic: str, payload: bytes, **kwargs: object) -> None:
        if topic.endswith("/telemetry"):
            self.topics.append(topic)
        await super().publish(topic, payload, **kwargs)


class Gateway:
    """A gateway with no SNMP devices of its own: the test puts the samples in its outbox."""

    def __init__(self, tmp_path: Path) -> None:
        # The link's own outbox stays empty: only the via outbox carries samples here.
        self.harness = Harness(MemoryOutbox(100))
        self.outbox = MemoryOutbox(100)
        self.gateway = SiteGateway(
            "gw-1",
            [],
            self.harness.link,
            timeout_s=1.0,
            state_dir=tmp_path,
            max_samples=100,
            engine=object(),
        )
        self.seq = 0
        self.drainer = asyncio.create_task(self.gateway._drain(self.outbox))

    async def sample(self, count: int) -> None:
        for _ in range(count):
            await self.outbox.put(b"mfp-9\n" + json.dumps({"seq": self.seq}).encode())
            self.seq += 1
        self.gateway._wake.set()

    async def close(self) -> None:
        self.drainer.cancel()
        await asyncio.gather(self.drainer, return_exceptions=True)


async def test_an_announcement_resends_what_the_previous_and_current_connections_sent(
    tmp_path: Path,
) -> None:
    gw = Gateway(tmp_path)
    try:
        first = ViaBroker()
        task, stopping = await gw.harness.connect(first)
        await gw.sample(3)
        await until(lambda: first.telemetry == [0, 1, 2])
        assert set(first.topics) == {topics.via_topic("gw-1", "mfp-9", "telemetry")}
        await stop(task, stopping)

        # The broker is back: the backlog drains before the server has subscribed.
        await gw.sample(2)
        second = ViaBroker()
        task, stopping = await gw.harness.connect(second)
        await until(lambda: second.telemetry == [3, 4])
        assert gw.gateway.resent == 0
        assert await gw.outbox.sent_count() == 5

        # A retained (old) announcement is not the signal; a live one is.
        second.announce("srv-1", T0, retain=True)
        await gw.sample(1)
        await until(lambda: second.telemetry == [3, 4, 5])
        second.announce("srv-1", T0 + timedelta(seconds=1))
        await until(lambda: gw.gateway.resent == 6)
        # Oldest first, the previous connection's too, before newer samples.
        assert second.telemetry == [3, 4, 5, 0, 1, 2, 3, 4, 5]
        await gw.sample(1)
        await until(lambda: second.telemetry[-1] == 6)
        await stop(task, stopping)

        # A third connection: an announcement resends the second's and its own, not the first's.
        third = ViaBroker()
        task, stopping = await gw.harness.connect(third)
        await gw.sample(1)
        await until(lambda: third.telemetry == [7])
        third.announce("srv-2", T0)
        await until(lambda: gw.gateway.resent == 6 + 5)
        assert third.telemetry == [7, 3, 4, 5, 6, 7]
        await stop(task, stopping)
    finally:
        await gw.close()


async def test_without_a_resend_window_nothing_is_resent(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    gw.outbox = MemoryOutbox(100, resend_max_samples=0)
    await gw.close()
    gw.drainer = asyncio.create_task(gw.gateway._drain(gw.outbox))
    try:
        broker = ViaBroker()
        task, stopping = await gw.harness.connect(broker)
        await gw.sample(2)
        await until(lambda: broker.telemetry == [0, 1])
        broker.announce("srv-1", T0)
        await gw.sample(1)
        await until(lambda: broker.telemetry == [0, 1, 2])
        assert gw.gateway.resent == 0
        await stop(task, stopping)
    finally:
        await gw.close()
