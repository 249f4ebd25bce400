"""The outbox: ordered, bounded with drops counted, durable, sent samples kept for resends."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import pytest

from agent.health.outbox import MemoryOutbox, Outbox, SqliteOutbox


class FakeClock:
    """UNIX time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class OutboxFactory(Protocol):
    def __call__(
        self, max_samples: int, *, window_s: float = 600.0, resend_max: int = 2_000
    ) -> Awaitable[Outbox]: ...


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "memory"])
async def make_outbox(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[OutboxFactory]:
    opened: list[Outbox] = []

    async def make(max_samples: int, *, window_s: float = 600.0, resend_max: int = 2_000) -> Outbox:
        box: Outbox
        options: dict[str, Any] = {
            "resend_window_s": window_s,
            "resend_max_samples": resend_max,
            "clock": clock,
        }
        if request.param == "sqlite":
            box = await SqliteOutbox.open(tmp_path / "state", max_samples, **options)
        else:
            box = MemoryOutbox(max_samples, **options)
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


async def test_only_acknowledged_samples_leave_the_queue(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100)
    for n in range(5):
        await box.put(sample(n))
    batch = await box.peek(3)
    # The broker acked the first two; the third is still in flight.
    await box.mark_sent([batch[0][0], batch[1][0]])
    assert [p for _, p in await box.peek(10)] == [sample(2), sample(3), sample(4)]
    # peek never removes.
    assert await box.count() == 3
    # The acknowledged ones are kept for a resend, in order.
    assert [p for _, p in await box.sent_since(0, 10)] == [sample(0), sample(1)]
    assert await box.sent_count() == 2


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
    await box.mark_sent([in_flight[0][0]])
    assert [p for _, p in await box.peek(10)] == [sample(1), sample(2)]
    assert await box.count() == 2
    assert await box.sent_count() == 0
    assert await box.sent_since(0, 10) == []


async def test_acking_twice_counts_once(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(10)
    await box.put(sample(0))
    row_id = (await box.peek(1))[0][0]
    await box.mark_sent([row_id])
    await box.mark_sent([row_id])
    await box.mark_sent([])
    assert (await box.count(), await box.sent_count()) == (0, 1)


async def test_sent_samples_never_push_unsent_ones_out(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(3, resend_max=100)
    for n in range(3):
        await box.put(sample(n))
    await box.mark_sent([i for i, _ in await box.peek(3)])
    for n in range(3, 6):
        await box.put(sample(n))
    # Three unsent and three sent: the bound of 3 applies to the unsent only.
    assert [p for _, p in await box.peek(10)] == [sample(3), sample(4), sample(5)]
    assert await box.take_dropped() == 0
    assert await box.sent_count() == 3
    await box.put(sample(6))
    assert [p for _, p in await box.peek(10)] == [sample(4), sample(5), sample(6)]
    assert await box.take_dropped() == 1
    # The sent ones are still there for a resend.
    assert [p for _, p in await box.sent_since(0, 10)] == [sample(0), sample(1), sample(2)]


async def test_sent_since_pages_by_id_from_a_starting_point(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100)
    for n in range(10):
        await box.put(sample(n))
    rows = await box.peek(10)
    # Acked out of order: the resend still comes back in the order of the samples.
    await box.mark_sent([i for i, _ in reversed(rows[:8])])
    first = rows[3][0]
    page = await box.sent_since(first, 3)
    assert [p for _, p in page] == [sample(3), sample(4), sample(5)]
    page = await box.sent_since(page[-1][0] + 1, 3)
    assert [p for _, p in page] == [sample(6), sample(7)]  # 8 and 9 are unsent
    assert await box.sent_since(page[-1][0] + 1, 3) == []


async def test_sent_samples_expire_after_the_window(
    make_outbox: OutboxFactory, clock: FakeClock
) -> None:
    box = await make_outbox(100, window_s=60)
    for n in range(4):
        await box.put(sample(n))
    rows = await box.peek(4)
    await box.mark_sent([rows[0][0], rows[1][0]])
    clock.now += 40
    await box.mark_sent([rows[2][0]])
    clock.now += 30  # the first two were sent 70 s ago, the third 30 s ago
    # Out of the window: no longer offered for a resend, even before a prune.
    assert [p for _, p in await box.sent_since(0, 10)] == [sample(2)]
    await box.prune()
    assert await box.sent_count() == 1
    clock.now += 31
    await box.mark_sent([rows[3][0]])  # marking prunes as well
    assert await box.sent_count() == 1
    assert [p for _, p in await box.sent_since(0, 10)] == [sample(3)]
    assert await box.count() == 0


async def test_at_most_resend_max_samples_are_kept(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100, resend_max=3)
    for n in range(5):
        await box.put(sample(n))
    for row_id, _ in await box.peek(5):
        await box.mark_sent([row_id])
    assert await box.sent_count() == 3
    assert [p for _, p in await box.sent_since(0, 10)] == [sample(2), sample(3), sample(4)]


async def test_a_zero_resend_bound_keeps_nothing(make_outbox: OutboxFactory) -> None:
    box = await make_outbox(100, resend_max=0)
    await box.put(sample(0))
    await box.mark_sent([i for i, _ in await box.peek(1)])
    assert (await box.count(), await box.sent_count()) == (0, 0)
    assert await box.sent_since(0, 10) == []


async def test_sqlite_outbox_survives_a_restart(tmp_path: Path) -> None:
    box = await SqliteOutbox.open(tmp_path, 3)
    for n in range(5):
        await box.put(sample(n))
    first = await box.peek(1)
    await box.mark_sent([first[0][0]])
    await box.close()

    reopened = await SqliteOutbox.open(tmp_path, 3)
    try:
        assert [p for _, p in await reopened.peek(10)] == [sample(3), sample(4)]
        assert await reopened.count() == 2
        # The sent sample is still kept for a resend, and not counted as waiting.
        assert [p for _, p in await reopened.sent_since(0, 10)] == [sample(2)]
        assert await reopened.sent_count() == 1
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


async def test_an_outbox_from_before_the_resend_window_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);"
        "CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO outbox_meta VALUES ('dropped', 4);"
    )
    db.executemany("INSERT INTO outbox (payload) VALUES (?)", [(sample(n),) for n in range(3)])
    db.commit()
    db.close()

    box = await SqliteOutbox.open(tmp_path, 10)
    try:
        # Everything stored by the old agent is still waiting, none of it counts as sent.
        assert [p for _, p in await box.peek(10)] == [sample(0), sample(1), sample(2)]
        assert (await box.count(), await box.sent_count()) == (3, 0)
        assert await box.take_dropped() == 4
        await box.mark_sent([i for i, _ in await box.peek(1)])
        assert [p for _, p in await box.sent_since(0, 10)] == [sample(0)]
    finally:
        await box.close()
