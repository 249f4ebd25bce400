"""The batching policy: which received messages go to the writer, and when.

The ingest thread keeps every received message, valid or not, in arrival order
until its batch is committed, so that it is acknowledged to the broker only
then (a message without an item is acknowledged with its neighbours). One
batch is in flight at a time. A batch is handed over

- when ``ingest_batch_size`` items wait;
- when the broker has nothing more to read right now and the first waiting
  message is :data:`GATHER_S` old (at most ``ingest_flush_ms``): under load the
  writer is busy longer than this and batches grow with the backlog; when the
  load is light, this keeps the batches (each a commit rewriting whole pages)
  to about 100 a second;
- else ``ingest_flush_ms`` after the first waiting message;

never before a database retry is due. :class:`Batcher` is plain bookkeeping on
the ingest thread (no thread, no broker, no database); tests give it their clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server import metrics
from server.ingest.items import IngestItem, Pending

#: With the broker's socket drained and the writer free, a batch is handed over once
#: its first message is this old (at most ``ingest_flush_ms``).
GATHER_S = 0.01


class Batcher:
    """The messages received and not yet acknowledged, and the batch in flight.

    Args:
        batch_size: Items per batch at most (``ingest_batch_size``).
        flush_s: The longest a message waits for its batch (``ingest_flush_ms``).
        clock: The monotonic clock (read when a first message waits).
    """

    def __init__(
        self, batch_size: int, flush_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.clock = clock
        #: Received, not yet committed: ``(item or None, mid, qos, connection generation)``.
        self.pending: list[Pending] = []
        #: How many of :attr:`pending` carry an item.
        self.pending_items = 0
        #: The first ``inflight_cut`` pending messages (``inflight_items`` items) are
        #: being committed by the writer (0: no batch in flight).
        self.inflight_cut = 0
        self.inflight_items = 0
        #: When the first message still waiting arrived (``time.monotonic()``).
        self.first_pending_at = 0.0
        #: No batch before this (a database retry; ``time.monotonic()``).
        self.not_before = 0.0
        #: ``False`` once stopping: what arrives then stays unacknowledged.
        self.accepting = True

    def add(self, item: IngestItem | None, mid: int, qos: int, generation: int) -> None:
        """Keep one received message (``item`` ``None``: only to be acknowledged)."""
        if len(self.pending) == self.inflight_cut:
            self.first_pending_at = self.clock()
        self.pending.append((item, mid, qos, generation))
        if item is not None:
            self.pending_items += 1

    @property
    def in_flight(self) -> bool:
        """Whether a batch is being committed."""
        return self.inflight_cut > 0

    @property
    def gathering(self) -> bool:
        """Whether messages wait behind the batch in flight (or for a first one)."""
        return len(self.pending) > self.inflight_cut

    def due(self, *, idle: bool) -> float:
        """When the waiting messages are to be handed to the writer (``time.monotonic()``)."""
        waiting = self.pending_items - self.inflight_items
        if waiting >= self.batch_size or not self.accepting:
            return self.not_before
        wait_s = min(self.flush_s, GATHER_S) if idle else self.flush_s
        return max(self.not_before, self.first_pending_at + wait_s)

    def settle(self, ok: bool, *, retry_at: float = 0.0) -> list[Pending]:
        """The batch in flight is done: the messages to acknowledge now.

        ``ok`` ``False``: the database is unavailable; the messages stay, unacknowledged,
        and the batch is handed over again at ``retry_at`` at the earliest.
        """
        cut, self.inflight_cut = self.inflight_cut, 0
        items, self.inflight_items = self.inflight_items, 0
        if not ok:
            self.not_before = retry_at
            return []
        done = self.pending[:cut]
        del self.pending[:cut]
        self.pending_items -= items
        metrics.INGEST_QUEUE_DEPTH.set(self.pending_items)
        return done

    def take(self, now: float, *, idle: bool) -> tuple[list[IngestItem], list[Pending]]:
        """When due (and no batch is in flight): the next batch for the writer, or the
        messages to acknowledge at once when none of them carries an item."""
        if self.inflight_cut or not self.pending or now < self.due(idle=idle):
            return [], []
        cut = len(self.pending)
        if self.pending_items > self.batch_size:
            count = 0
            for index, entry in enumerate(self.pending):
                if entry[0] is not None:
                    count += 1
                    if count == self.batch_size:
                        cut = index + 1
                        break
        batch = [entry[0] for entry in self.pending[:cut] if entry[0] is not None]
        metrics.INGEST_QUEUE_DEPTH.set(self.pending_items)
        if batch:
            self.inflight_cut, self.inflight_items = cut, len(batch)
            return batch, []
        done = self.pending[:cut]
        del self.pending[:cut]
        return [], done
