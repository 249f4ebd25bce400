"""The link's resend trigger: a new server announcement re-publishes this connection's samples.

The broker here is a stand-in that acknowledges every publish at once and lets
the test deliver server announcements; the real broker is in
``tests/integration/test_agent_resend.py``.
"""

from __future__ import annotations

from datetime import timedelta

import aiomqtt
import pytest

from agent.health.outbox import MemoryOutbox
from shared import topics
from tests.fixtures.link_harness import T0, AckingBroker, Harness, settle, stop, until


@pytest.fixture
async def harness() -> Harness:
    return Harness(MemoryOutbox(100))


async def test_a_new_announcement_resends_this_connections_samples_in_order(
    harness: Harness,
) -> None:
    broker = AckingBroker()
    await harness.sample(7)  # a backlog, drained on connect
    task, stopping = await harness.connect(broker)
    await until(lambda: len(broker.telemetry) == 7)
    assert await harness.outbox.count() == 0
    assert await harness.outbox.sent_count() == 7

    broker.announce("srv-a", T0)
    await until(lambda: len(broker.telemetry) == 14)
    await harness.sample()
    await until(lambda: len(broker.telemetry) == 15)
    # The whole connection again, oldest first, then the newer sample.
    assert broker.telemetry == [*range(7), *range(7), 7]
    assert harness.link.resent == 7
    assert harness.link.published == 8
    assert broker.births == 2  # the birth on connect and again for the server
    await stop(task, stopping)


async def test_old_or_retained_announcements_resend_nothing(harness: Harness) -> None:
    broker = AckingBroker()
    task, stopping = await harness.connect(broker)
    # The retained state that arrives on subscribing is only remembered.
    broker.announce("srv-a", T0, retain=True)
    await harness.sample(3)
    await until(lambda: len(broker.telemetry) == 3)
    broker.announce("srv-a", T0)  # not newer than the one known
    broker.announce("srv-a", T0 - timedelta(seconds=5))  # older
    await settle()
    await harness.sample()
    await until(lambda: len(broker.telemetry) == 4)
    await settle()
    assert broker.telemetry == [0, 1, 2, 3]
    assert harness.link.resent == 0
    # A newer one from the same instance (it reconnected) does trigger a resend.
    broker.announce("srv-a", T0 + timedelta(seconds=1))
    await until(lambda: len(broker.telemetry) == 8)
    assert broker.telemetry == [0, 1, 2, 3, 0, 1, 2, 3]
    await stop(task, stopping)


async def test_only_the_current_connection_is_resent(harness: Harness) -> None:
    first = AckingBroker()
    task, stopping = await harness.connect(first)
    await harness.sample(4)
    await until(lambda: len(first.telemetry) == 4)
    await stop(task, stopping)

    second = AckingBroker()
    task, stopping = await harness.connect(second)
    await harness.sample(2)
    await until(lambda: len(second.telemetry) == 2)
    second.announce("srv-b", T0)
    await until(lambda: len(second.telemetry) == 4)
    # Samples 0-3 reached the server over the first connection: only 4 and 5 again.
    assert second.telemetry == [4, 5, 4, 5]
    await stop(task, stopping)


async def test_an_announcement_before_anything_was_sent_resends_nothing(
    harness: Harness,
) -> None:
    broker = AckingBroker()
    task, stopping = await harness.connect(broker)
    broker.announce("srv-a", T0)
    await until(lambda: broker.births == 2)
    await harness.sample(2)
    await until(lambda: len(broker.telemetry) == 2)
    await settle()
    assert broker.telemetry == [0, 1]
    assert harness.link.resent == 0
    await stop(task, stopping)


async def test_samples_past_the_resend_window_are_not_resent() -> None:
    clock = [1_800_000_000.0]
    outbox = MemoryOutbox(100, resend_window_s=60, clock=lambda: clock[0])
    harness = Harness(outbox)
    broker = AckingBroker()
    task, stopping = await harness.connect(broker)
    await harness.sample(2)
    await until(lambda: len(broker.telemetry) == 2)
    clock[0] += 61
    await harness.sample(1)
    await until(lambda: len(broker.telemetry) == 3)
    broker.announce("srv-a", T0)
    await until(lambda: len(broker.telemetry) == 4)
    await settle()
    assert broker.telemetry == [0, 1, 2, 2]
    await stop(task, stopping)


async def test_a_malformed_announcement_is_ignored(harness: Harness) -> None:
    broker = AckingBroker()
    task, stopping = await harness.connect(broker)
    await harness.sample(2)
    await until(lambda: len(broker.telemetry) == 2)
    for payload in (b"{not json", b'{"online":true}', b'{"online":true,"ts":"x","instance":1}'):
        broker._inbox.put_nowait(aiomqtt.Message(topics.SERVER_STATE, payload, 1, False, 1, None))
    await settle()
    assert broker.telemetry == [0, 1]
    assert not task.done()
    await stop(task, stopping)
