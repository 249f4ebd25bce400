"""The agent's loop without a broker: it keeps sampling into the outbox, counts what it drops."""

from __future__ import annotations

import asyncio
import json
import random

from agent.health.collectors import Reading
from agent.health.link_setup import reconnect_delay
from agent.health.outbox import MemoryOutbox
from agent.supervisor import Agent
from shared.broker_url import BrokerAddress
from tests.fixtures.ports import free_port


class CountingCollector:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def collect(self) -> Reading:
        self.calls += 1
        return Reading(metrics={"calls": float(self.calls)})


def unreachable_broker() -> BrokerAddress:
    # Nothing listens there: the agent must sample all the same.
    return BrokerAddress("127.0.0.1", free_port(), tls=False)


async def run_for(agent: Agent, seconds: float) -> None:
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(seconds)
    agent.stop()
    await asyncio.wait_for(task, 10)


async def test_samples_accumulate_in_order_while_the_broker_is_down() -> None:
    outbox = MemoryOutbox(100)
    agent = Agent("srv-1", unreachable_broker(), [CountingCollector()], outbox, interval_s=0.1)
    await run_for(agent, 0.55)
    stored = [json.loads(payload) for _, payload in await outbox.peek(100)]
    assert len(stored) >= 4
    assert [s["seq"] for s in stored] == list(range(len(stored)))
    assert {s["boot_id"] for s in stored} == {agent.boot_id}
    assert [s["metrics"]["calls"] for s in stored] == [float(n + 1) for n in range(len(stored))]


async def test_drops_are_reported_in_the_next_sample() -> None:
    outbox = MemoryOutbox(2)
    agent = Agent("srv-1", unreachable_broker(), [CountingCollector()], outbox, interval_s=60)
    for _ in range(4):
        await agent.sample_once()
    # Samples 0 and 1 were dropped to make room for 2 and 3.
    kept = [json.loads(payload) for _, payload in await outbox.peek(10)]
    assert [s["seq"] for s in kept] == [2, 3]
    assert [s["outbox_dropped"] for s in kept] == [0, 1]
    payload = await agent.sample_once()
    assert json.loads(payload)["outbox_dropped"] == 1
    payload = await agent.sample_once()
    assert json.loads(payload)["outbox_dropped"] == 1


async def test_a_cancelled_agent_returns_promptly_without_a_broker() -> None:
    agent = Agent("srv-1", unreachable_broker(), [CountingCollector()], MemoryOutbox(10))
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert task.done()


def test_reconnect_delay_is_jittered_floored_and_capped() -> None:
    rng = random.Random(1)
    first = [reconnect_delay(0, 1.0, 60.0, rng) for _ in range(500)]
    assert all(1.0 <= d <= 2.0 for d in first)
    assert max(first) - min(first) > 0.8, "a fleet's first reconnects are spread"
    late = [reconnect_delay(20, 1.0, 60.0, rng) for _ in range(500)]
    assert all(1.0 <= d <= 60.0 for d in late)
    assert max(late) > 50
    assert min(late) < 10
