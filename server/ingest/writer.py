"""The writer and checkpoint threads: batches committed while the ingest thread reads on.

:class:`BatchWriter` commits one batch at a time on a thread of its own (the
database's own work, SQLite's C code or PostgreSQL's round trips, runs outside
the interpreter lock); reading, validation and acknowledgements stay on the
ingest thread, which hands batches over with :meth:`BatchWriter.submit` and
collects each outcome with :meth:`BatchWriter.outcome`. A database that is down
fails the batch (kept, retried after a jittered backoff); a batch that fails on
its data is written item by item and the items that fail are dropped, counted.

:class:`Checkpointer` (SQLite) runs the WAL checkpoints that SQLite would
otherwise run inside a commit now and then.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from server import metrics
from server.ingest.items import BatchResult, IngestItem
from server.ingest.store import IngestStore

logger = logging.getLogger(__name__)

#: Database retry backoff bounds (seconds); each wait is drawn uniformly below the
#: bound, which doubles on each failure.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0
#: SQLite: how often the WAL is checkpointed, on a thread of its own.
CHECKPOINT_INTERVAL_S = 1.0

#: Called on the writer thread after each commit with the result and ``time.time()``.
CommittedHook = Callable[[BatchResult, float], None]


class BatchWriter:
    """Commits the batches it is handed, one at a time, on its own thread.

    Args:
        store: Where batches are written.
        lock: Held around each transaction (serializes batches with the fleet upkeep).
        on_committed: Called after each commit (on the writer thread).
        wake: Called after each outcome, to end the ingest thread's wait on the socket.
    """

    def __init__(
        self,
        store: IngestStore,
        *,
        lock: threading.Lock,
        on_committed: CommittedHook,
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.lock = lock
        self.on_committed = on_committed
        self.wake = wake
        #: When a failed batch may be retried (``time.monotonic()``; set on this thread).
        self.retry_at = 0.0
        self._backoff = BACKOFF_MIN_S
        self._requests: queue.SimpleQueue[list[IngestItem] | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(
            target=self._main, name="fieldlink-ingest-writer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Finish the batch in flight and end the thread; whether it ended in time."""
        thread = self._thread
        if thread is None:
            return True
        self._requests.put(None)
        thread.join(timeout_s)
        return not thread.is_alive()

    def submit(self, batch: list[IngestItem]) -> None:
        """Hand one batch over (one at a time: wait for its :meth:`outcome`)."""
        self._requests.put(batch)

    def outcome(self) -> bool | None:
        """The batch's outcome once it is done (``False``: retry it), else ``None``."""
        try:
            return self._outcomes.get_nowait()
        except queue.Empty:
            return None

    def _main(self) -> None:
        while (batch := self._requests.get()) is not None:
            try:
                ok = self.write(batch)
            except Exception:
                logger.exception("the ingest writer failed on a batch")
                ok = False
            self._outcomes.put(ok)
            self.wake()

    def write(self, batch: Sequence[IngestItem]) -> bool:
        """Commit one batch; ``False`` when the database is unavailable (retry later)."""
        started = time.perf_counter()
        try:
            with self.lock:
                result = self.store.write(batch)
        except (OperationalError, DBAPIError) as exc:
            if not _unavailable(exc):
                self._write_one_by_one(batch)
                return True
            delay = random.uniform(BACKOFF_MIN_S / 2, self._backoff)  # noqa: S311  (jitter)
            logger.warning(
                "database unavailable for ingest: %s; retrying in %.1f s", exc.orig, delay
            )
            self.retry_at = time.monotonic() + delay
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            return False
        except Exception:
            logger.exception("ingest batch failed; writing its messages one by one")
            self._write_one_by_one(batch)
            return True
        self._backoff = BACKOFF_MIN_S
        self._committed(result, len(batch), time.perf_counter() - started)
        return True

    def _write_one_by_one(self, batch: Sequence[IngestItem]) -> None:
        """A batch failed on its data: write its items alone and drop the ones that fail."""
        for item in batch:
            try:
                with self.lock:
                    result = self.store.write([item])
            except Exception:
                logger.exception(
                    "dropped one %s message for %s", type(item).__name__, item.device_id
                )
                metrics.INGEST_MESSAGES.labels("error").inc()
                continue
            self._committed(result, 1, 0.0)

    def _committed(self, result: BatchResult, size: int, seconds: float) -> None:
        committed = time.time()
        count_batch(result, size, seconds, committed)
        self.on_committed(result, committed)


def count_batch(result: BatchResult, size: int, seconds: float, committed: float) -> None:
    """Export what one committed batch did on ``/metrics``."""
    metrics.INGEST_BATCH_SIZE.observe(size)
    if seconds:
        metrics.INGEST_FLUSH_SECONDS.observe(seconds)
    counts = {
        "stored": result.stored,
        "duplicate": result.duplicates,
        "state": result.states - result.stale_states,
        "stale_state": result.stale_states,
        "event": result.events,
        "command_result": len(result.command_results),
    }
    for label, count in counts.items():
        if count:
            metrics.INGEST_MESSAGES.labels(label).inc(count)
    for reason, count in (
        ("unregistered", result.unregistered),
        ("revoked", result.revoked),
        ("not_bound", result.not_bound),
    ):
        if count:
            metrics.INGEST_MESSAGES.labels("rejected").inc(count)
            metrics.INGEST_REJECTED.labels(reason).inc(count)
    if result.missing_delta > 0:
        metrics.TELEMETRY_MISSING.inc(result.missing_delta)
    if result.late:
        metrics.TELEMETRY_LATE.inc(result.late)
    if result.seq_resets:
        metrics.TELEMETRY_SEQ_RESETS.inc(result.seq_resets)
    if result.ts_untrusted:
        metrics.TELEMETRY_TS_UNTRUSTED.inc(result.ts_untrusted)
    if result.outbox_dropped:
        metrics.OUTBOX_DROPPED.inc(result.outbox_dropped)
    for sent in result.stored_sent_times:
        metrics.INGEST_LATENCY.observe(max(0.0, committed - sent))


def _unavailable(exc: DBAPIError) -> bool:
    """Whether the error means the database is unreachable (retry) rather than bad data."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


class Checkpointer:
    """SQLite: WAL checkpoints every :data:`CHECKPOINT_INTERVAL_S`, off the ingest thread.

    SQLite would otherwise run one inside a commit every 1,000 pages of log,
    stalling that batch for tens of milliseconds (copying and syncing). A
    passive checkpoint waits for nobody; SQLite's C code runs it outside the
    interpreter lock, on the other core.
    """

    def __init__(self, engine: Engine, store: IngestStore) -> None:
        self.engine = engine
        self.store = store
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (the store's commits stop checkpointing from now on)."""
        self.store.checkpoint_elsewhere = True
        self._thread = threading.Thread(
            target=self._main, name="fieldlink-ingest-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """End the thread."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _main(self) -> None:
        conn = None
        try:
            while not self._done.wait(CHECKPOINT_INTERVAL_S):
                try:
                    if conn is None:
                        conn = self.engine.connect()
                    self.store.checkpoint(conn)
                except Exception as exc:  # a locked or missing database: try again later
                    logger.debug("WAL checkpoint failed: %s", exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
