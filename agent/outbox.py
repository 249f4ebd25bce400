"""The outbox: every sample is stored here before it is published, and removed only once acked.

While the broker is down the agent keeps sampling into the outbox; when it
returns, the publisher drains the backlog oldest first. The outbox is bounded:
past ``max_samples`` the oldest samples are dropped, and the number dropped is
reported in the next sample's ``outbox_dropped``.

:class:`SqliteOutbox` keeps the samples on disk (they survive a restart or a
power cut) and does its SQLite work on one worker thread of its own, off the
event loop. :class:`MemoryOutbox` is the same in memory, for the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from shared.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

OUTBOX_FILENAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('dropped', 0);
"""


class Outbox(Protocol):
    """A bounded, ordered store of samples waiting for the broker's acknowledgement."""

    async def put(self, payload: bytes) -> None:
        """Store a sample at the end, dropping the oldest ones past the bound."""
        ...

    async def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` samples as ``(id, payload)``, oldest first, left in place."""
        ...

    async def remove(self, ids: Sequence[int]) -> None:
        """Forget samples the broker acknowledged (ids already dropped are ignored)."""
        ...

    async def take_dropped(self) -> int:
        """How many samples were dropped since the last call, resetting the count."""
        ...

    async def count(self) -> int:
        """How many samples are waiting."""
        ...

    async def close(self) -> None:
        """Release the store."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory: lost on exit, for simulated devices.

    Args:
        max_samples: How many samples it holds before dropping the oldest.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._samples: deque[tuple[int, bytes]] = deque()
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

    async def remove(self, ids: Sequence[int]) -> None:
        gone = set(ids)
        # Acks arrive for the oldest samples, so this usually pops from the left only.
        while self._samples and self._samples[0][0] in gone:
            gone.discard(self._samples.popleft()[0])
        if gone:
            self._samples = deque(s for s in self._samples if s[0] not in gone)

    async def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    async def count(self) -> int:
        return len(self._samples)

    async def close(self) -> None:
        self._samples.clear()


class SqliteOutbox:
    """An :class:`Outbox` in a SQLite file: survives restarts, bounded, worked on off the loop.

    Open it with :meth:`open`.

    Args:
        path: The SQLite file.
        max_samples: How many samples it holds before dropping the oldest.
    """

    def __init__(self, path: Path, max_samples: int) -> None:
        self.path = path
        self.max_samples = max_samples
        # One thread owns the connection: SQLite calls can block (fsync, a slow disk).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._count = 0

    @classmethod
    async def open(cls, state_dir: Path, max_samples: int) -> SqliteOutbox:
        """Open (or create) ``outbox.sqlite3`` in ``state_dir``.

        Raises:
            ConfigError: when the state directory or the file cannot be used.
        """
        outbox = cls(state_dir / OUTBOX_FILENAME, max_samples)
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
        # WAL with synchronous=NORMAL survives a crash of the agent; FULL would add an
        # fsync per sample for the power-cut case at little real gain for health data.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._count = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._db = db
        if self._count:
            logger.info("outbox has %d samples from before the restart", self._count)

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
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
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
                "SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
            )
            return [(int(row[0]), bytes(row[1])) for row in rows]

        return await self._run(peek_sync)

    async def remove(self, ids: Sequence[int]) -> None:
        if not ids:
            return

        def remove_sync() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                deleted = db.executemany(
                    "DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]
                ).rowcount
                self._count -= deleted

        await self._run(remove_sync)

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

    async def close(self) -> None:
        def close_sync() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._run(close_sync)
        finally:
            self._executor.shutdown(wait=True)
