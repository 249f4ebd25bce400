"""The outbox: every sample is stored here before it is published, and kept a while after.

While the broker is down the agent keeps sampling into the outbox; when it
returns, the publisher drains the backlog oldest first. The outbox is bounded:
past ``max_samples`` unsent samples the oldest are dropped, and the number
dropped is reported in the next sample's ``outbox_dropped``.

A broker's acknowledgement (PUBACK) does not prove that the server got a
sample: after a broker restart the server's shared subscription is gone until
the server reconnects, and what is published meanwhile reaches nobody. So an
acknowledged sample is only *marked sent* and kept for a resend window (at most
``resend_window_s`` seconds and ``resend_max_samples`` samples, the oldest sent
pruned first). When a server announces itself, the link re-publishes the sent
samples of its current connection (:meth:`Outbox.sent_since`); the server
stores each ``(device_id, boot_id, seq)`` once. Sent samples never count against
``max_samples``: they cannot push an unsent sample out.

:class:`SqliteOutbox` keeps the samples on disk (they survive a restart or a
power cut) and does its SQLite work on one worker thread of its own, off the
event loop. :class:`MemoryOutbox` is the same in memory, for the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from shared.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

OUTBOX_FILENAME = "outbox.sqlite3"
#: Seconds an acknowledged sample is kept for a resend, by default.
DEFAULT_RESEND_WINDOW_S = 600.0
#: Acknowledged samples kept for a resend, at most, by default.
DEFAULT_RESEND_MAX_SAMPLES = 2_000

Clock = Callable[[], float]

# ``sent`` is NULL until the broker acknowledged the sample, then the UNIX time it did.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL, sent REAL
);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('dropped', 0);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent IS NULL;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent, id) WHERE sent IS NOT NULL;
"""


class Outbox(Protocol):
    """A bounded, ordered store of samples waiting for the broker, and of recently sent ones."""

    async def put(self, payload: bytes) -> None:
        """Store a sample at the end, dropping the oldest unsent ones past the bound."""
        ...

    async def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` unsent samples as ``(id, payload)``, oldest first, left in place."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark samples the broker acknowledged as sent, then prune the sent ones.

        Ids already sent or dropped are ignored.
        """
        ...

    async def sent_since(self, first_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` sent samples with ``id >= first_id`` still in the window, by id."""
        ...

    async def prune(self) -> None:
        """Forget sent samples past the resend window or past ``resend_max_samples``."""
        ...

    async def take_dropped(self) -> int:
        """How many unsent samples were dropped since the last call, resetting the count."""
        ...

    async def count(self) -> int:
        """How many samples wait to be sent."""
        ...

    async def sent_count(self) -> int:
        """How many sent samples are kept for a resend."""
        ...

    async def close(self) -> None:
        """Release the store."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory: lost on exit, for simulated devices.

    Args:
        max_samples: How many unsent samples it holds before dropping the oldest.
        resend_window_s: Seconds a sent sample is kept for a resend.
        resend_max_samples: Sent samples kept at most (0 keeps none).
        clock: The UNIX time (tests replace it).
    """

    def __init__(
        self,
        max_samples: int,
        *,
        resend_window_s: float = DEFAULT_RESEND_WINDOW_S,
        resend_max_samples: int = DEFAULT_RESEND_MAX_SAMPLES,
        clock: Clock = time.time,
    ) -> None:
        self.max_samples = max_samples
        self.resend_window_s = resend_window_s
        self.resend_max_samples = resend_max_samples
        self._clock = clock
        self._samples: deque[tuple[int, bytes]] = deque()
        # In the order they were acknowledged, which is the order of their send times.
        self._sent: deque[tuple[int, bytes, float]] = deque()
        self._next_id = 1
        self._dropped = 0

    async def put(self, payload: bytes) -> None:
        self._samples.append((self._next_id, payload))
        self._next_id += 1
        while len(self._samples) > self.max_samples:
            self._samples.popleft()
            self._dropped += 1

    async def peek(self, limit: int) -> list[tuple[int, bytes]]:
        return [self._samples[i] for i in range(min(limit, len(self._samples)))]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        gone = set(ids)
        now = self._clock()
        # Acks arrive for the oldest samples, so this usually pops from the left only.
        while self._samples and self._samples[0][0] in gone:
            row_id, payload = self._samples.popleft()
            gone.discard(row_id)
            self._sent.append((row_id, payload, now))
        if gone:
            kept: deque[tuple[int, bytes]] = deque()
            for row_id, payload in self._samples:
                if row_id in gone:
                    self._sent.append((row_id, payload, now))
                else:
                    kept.append((row_id, payload))
            self._samples = kept
        await self.prune()

    async def sent_since(self, first_id: int, limit: int) -> list[tuple[int, bytes]]:
        cutoff = self._clock() - self.resend_window_s
        rows = sorted((i, p) for i, p, at in self._sent if i >= first_id and at >= cutoff)
        return rows[:limit]

    async def prune(self) -> None:
        cutoff = self._clock() - self.resend_window_s
        sent = self._sent
        while sent and (len(sent) > self.resend_max_samples or sent[0][2] < cutoff):
            sent.popleft()

    async def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    async def count(self) -> int:
        return len(self._samples)

    async def sent_count(self) -> int:
        return len(self._sent)

    async def close(self) -> None:
        self._samples.clear()
        self._sent.clear()


class SqliteOutbox:
    """An :class:`Outbox` in a SQLite file: survives restarts, bounded, worked on off the loop.

    Open it with :meth:`open`.

    Args:
        path: The SQLite file.
        max_samples: How many unsent samples it holds before dropping the oldest.
        resend_window_s: Seconds a sent sample is kept for a resend.
        resend_max_samples: Sent samples kept at most (0 keeps none).
        clock: The UNIX time (tests replace it).
    """

    def __init__(
        self,
        path: Path,
        max_samples: int,
        *,
        resend_window_s: float = DEFAULT_RESEND_WINDOW_S,
        resend_max_samples: int = DEFAULT_RESEND_MAX_SAMPLES,
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.max_samples = max_samples
        self.resend_window_s = resend_window_s
        self.resend_max_samples = resend_max_samples
        self._clock = clock
        # One thread owns the connection: SQLite calls can block (fsync, a slow disk).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._sent_count = 0

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        max_samples: int,
        *,
        resend_window_s: float = DEFAULT_RESEND_WINDOW_S,
        resend_max_samples: int = DEFAULT_RESEND_MAX_SAMPLES,
        clock: Clock = time.time,
    ) -> SqliteOutbox:
        """Open (or create) ``outbox.sqlite3`` in ``state_dir``.

        Raises:
            ConfigError: when the state directory or the file cannot be used.
        """
        outbox = cls(
            state_dir / OUTBOX_FILENAME,
            max_samples,
            resend_window_s=resend_window_s,
            resend_max_samples=resend_max_samples,
            clock=clock,
        )
        try:
            await outbox._run(outbox._open_sync)
        except (OSError, sqlite3.Error) as exc:
            outbox._executor.shutdown(wait=False)
            msg = f"[agent] state_dir: cannot open the outbox {outbox.path}: {exc}"
            raise ConfigError(msg) from exc
        return outbox

    async def _run(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # WAL with synchronous=NORMAL survives a crash of the agent; FULL would add an
            # fsync per sample for the power-cut case at little real gain for health data.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            if "sent" not in columns:
                # An outbox from before the resend window: everything in it is unsent.
                db.execute("ALTER TABLE outbox ADD COLUMN sent REAL")
            db.executescript(_INDEXES)
            self._count = int(
                db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0]
            )
            self._sent_count = int(
                db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NOT NULL").fetchone()[0]
            )
        except BaseException:
            db.close()
            raise
        self._db = db
        if self._count:
            logger.info("outbox has %d unsent samples from before the restart", self._count)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            msg = "the outbox is closed"
            raise RuntimeError(msg)
        return self._db

    def _put_sync(self, payload: bytes) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO outbox (payload) VALUES (?)", (payload,))
            self._count += 1
            excess = self._count - self.max_samples
            if excess > 0:
                deleted = db.execute(
                    "DELETE FROM outbox WHERE id IN "
                    "(SELECT id FROM outbox WHERE sent IS NULL ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
                db.execute(
                    "UPDATE outbox_meta SET value = value + ? WHERE key = 'dropped'", (deleted,)
                )
                self._count -= deleted

    async def put(self, payload: bytes) -> None:
        await self._run(lambda: self._put_sync(payload))

    async def peek(self, limit: int) -> list[tuple[int, bytes]]:
        def peek_sync() -> list[tuple[int, bytes]]:
            rows = self._conn().execute(
                "SELECT id, payload FROM outbox WHERE sent IS NULL ORDER BY id LIMIT ?", (limit,)
            )
            return [(int(row[0]), bytes(row[1])) for row in rows]

        return await self._run(peek_sync)

    def _prune_sync(self, db: sqlite3.Connection) -> None:
        """Delete sent samples past the window or the count bound (inside a transaction)."""
        cutoff = self._clock() - self.resend_window_s
        self._sent_count -= db.execute("DELETE FROM outbox WHERE sent < ?", (cutoff,)).rowcount
        excess = self._sent_count - self.resend_max_samples
        if excess > 0:
            self._sent_count -= db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
                "WHERE sent IS NOT NULL ORDER BY sent, id LIMIT ?)",
                (excess,),
            ).rowcount

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return

        def mark_sync() -> None:
            db = self._conn()
            now = self._clock()
            with db:
                db.execute("BEGIN IMMEDIATE")
                marked = db.executemany(
                    "UPDATE outbox SET sent = ? WHERE id = ? AND sent IS NULL",
                    [(now, i) for i in ids],
                ).rowcount
                self._count -= marked
                self._sent_count += marked
                self._prune_sync(db)

        await self._run(mark_sync)

    async def sent_since(self, first_id: int, limit: int) -> list[tuple[int, bytes]]:
        def select_sync() -> list[tuple[int, bytes]]:
            cutoff = self._clock() - self.resend_window_s
            rows = self._conn().execute(
                "SELECT id, payload FROM outbox WHERE id >= ? AND sent >= ? ORDER BY id LIMIT ?",
                (first_id, cutoff, limit),
            )
            return [(int(row[0]), bytes(row[1])) for row in rows]

        return await self._run(select_sync)

    async def prune(self) -> None:
        def prune_sync() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                self._prune_sync(db)

        await self._run(prune_sync)

    async def take_dropped(self) -> int:
        def take_sync() -> int:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                dropped = int(
                    db.execute("SELECT value FROM outbox_meta WHERE key = 'dropped'").fetchone()[0]
                )
                if dropped:
                    db.execute("UPDATE outbox_meta SET value = 0 WHERE key = 'dropped'")
                return dropped

        return await self._run(take_sync)

    async def count(self) -> int:
        return self._count

    async def sent_count(self) -> int:
        return self._sent_count

    async def close(self) -> None:
        def close_sync() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._run(close_sync)
        finally:
            self._executor.shutdown(wait=True)
