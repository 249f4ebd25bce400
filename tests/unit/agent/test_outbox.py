"""The outbox: ordered, bounded with drops counted, durable across restarts, removal only on ack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agent.outbox import MemoryOutbox, Outbox, SqliteOutbox

OutboxFactory = Callable[[int], Awaitable[Outbox]]


@pytest.fixture(params=["sqlite", "memory"])
async def make_outbox(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OutboxFactory]:
    opened: list[Outbox] = []

    async def make(max_samples: int) -> Outbox:
        box: Outbox
        if request.param == "sqlite":
            box = await SqliteOutbox.open(tmp_path / "state", max_samples)
        else:
            box = MemoryOutbox(max_samples)
        opened.append(box)
        return box

    yield make
    for box in opened:
        await box.close()


def sample(n: int) -> bytes:
    return b'{"seq":%d}' % n


async def test_samples_come_out_oldest_first(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100)
    for n in range(10):
        await box.put(sample(n))
    assert [p for _, p in await box.peek(4)] == [sample(n) for n in range(4)]
    assert await box.count() == 10


async def test_only_acknowledged_samples_are_removed(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100)
    for n in range(5):
        await box.put(sample(n))
    batch = await box.peek(3)
    # The broker acked the first two; the third is still in flight.
    await box.remove([batch[0][0], batch[1][0]])
    assert [p for _, p in await box.peek(10)] == [sample(2), sample(3), sample(4)]
    # peek never removes.
    assert await box.count() == 3


async def test_bound_drops_the_oldest_and_counts_them_once(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(3)
    for n in range(8):
        await box.put(sample(n))
    assert [p for _, p in await box.peek(10)] == [sample(5), sample(6), sample(7)]
    assert await box.count() == 3
    assert await box.take_dropped() == 5
    assert await box.take_dropped() == 0


async def test_removing_an_id_dropped_meanwhile_is_harmless(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(2)
    await box.put(sample(0))
    in_flight = await box.peek(1)
    await box.put(sample(1))
    await box.put(sample(2))  # drops sample 0 while it is in flight
    await box.remove([in_flight[0][0]])
    assert [p for _, p in await box.peek(10)] == [sample(1), sample(2)]
    assert await box.count() == 2


async def test_sqlite_outbox_survives_a_restart(tmp_path: Path) -> None:
    box = await SqliteOutbox.open(tmp_path, 3)
    for n in range(5):
        await box.put(sample(n))
    first = await box.peek(1)
    await box.remove([first[0][0]])
    await box.close()

    reopened = await SqliteOutbox.open(tmp_path, 3)
    try:
        assert [p for _, p in await reopened.peek(10)] == [sample(3), sample(4)]
        assert await reopened.count() == 2
        # The drops happened before the restart and are still reported after it.
        assert await reopened.take_dropped() == 2
        await reopened.put(sample(5))
        assert [p for _, p in await reopened.peek(10)][-1] == sample(5)
    finally:
        await reopened.close()


async def test_unusable_state_dir_is_one_clear_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="state_dir: cannot open the outbox"):
        await SqliteOutbox.open(blocker / "state", 10)
