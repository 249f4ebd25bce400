"""Server liveness: a heartbeat per process, and the closing of dead processes' sessions.

A remote session's tunnel lives in the memory of the one server process that
holds it (``remote_session.instance``). When that process dies without
closing its sessions (``kill -9``, an OOM kill, a lost host), nobody else
would ever close them: they would stay ``active`` forever, keep one of the
device's session slots and never get a ``session.close`` audit entry.

So each process keeps a row in ``server_instance`` and refreshes its
``heartbeat_at`` every ``instance_heartbeat_s`` (:meth:`InstanceLiveness.round`,
scheduled by :mod:`server.upkeep`). Every process also watches
the others' rows: an instance whose heartbeat has **not changed** for
``instance_dead_after_s``, measured on the watcher's own monotonic clock, is
dead. Its open sessions are closed with reason ``server_restart`` and a
``session.close`` audit entry, and its row is removed. Open sessions whose
instance has no row at all (its row was removed, or the session predates this
table) are judged the same way.

Why "has not changed, on my clock" rather than "older than now minus the
bound": the servers' clocks need not agree, and a database outage stops every
heartbeat at once. A watcher that itself failed to reach the database starts
its observation window again, so after an outage nobody is swept before it
had ``instance_dead_after_s`` to write a fresh heartbeat.

Each session is closed with a conditional ``UPDATE ... WHERE state IN (open
states)`` in the same transaction as its audit entry: two watchers sweeping
the same dead instance close (and audit) each session once.

At start, a process first closes the sessions its own instance id still holds:
with a configured ``instance_id``, they were left by this process's previous run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import audit, metrics
from server.models import OPEN_STATES, RemoteSession, ServerInstance
from shared import __version__
from shared.ids import utcnow
from shared.wire import CloseReason

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The close reason of sessions whose server stopped (CONTRACT.md).
SERVER_RESTART: Final[CloseReason] = "server_restart"


@dataclass(slots=True)
class _Seen:
    """What a watcher last saw of one instance, and since when (its monotonic clock)."""

    heartbeat: object
    since: float


def close_sessions(
    db: Session,
    *,
    instance: str,
    reason: str,
    detail: str,
    closed_by: str,
    session_id: str | None = None,
) -> list[str]:
    """Close (once, audited) every open session ``instance`` holds; the ids closed.

    Each session is closed with a conditional update in the transaction of its
    audit entry, so a session another process closed meanwhile is skipped.
    With ``session_id``, only that one.
    """
    query = select(RemoteSession.id).where(
        RemoteSession.instance == instance, col(RemoteSession.state).in_(OPEN_STATES)
    )
    if session_id is not None:
        query = query.where(RemoteSession.id == session_id)
    ids = db.exec(query).all()
    closed: list[str] = []
    for sid in ids:
        now = utcnow()
        done = db.execute(
            sa.update(RemoteSession)
            .where(col(RemoteSession.id) == sid, col(RemoteSession.state).in_(OPEN_STATES))
            .values(state="closed", close_reason=reason, detail=detail[:1024], ended_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            db.rollback()
            continue
        row = db.get(RemoteSession, sid)
        assert row is not None  # noqa: S101 (updated just above, same transaction)
        audit.record(
            db,
            actor=row.operator,
            action="session.close",
            target=row.device_id,
            details={
                "session_id": row.id,
                "close_reason": reason,
                "detail": detail[:1024],
                "instance": instance,
                "closed_by": closed_by,
                "services_used": row.services_used,
                "bytes_to_device": row.bytes_to_device,
                "bytes_from_device": row.bytes_from_device,
                "recording_sha256": row.recording_sha256,
            },
        )
        db.commit()
        metrics.SESSIONS_CLOSED.labels(reason).inc()
        closed.append(sid)
    return closed


class InstanceLiveness:
    """This process's heartbeat, and the watch over the other processes'.

    Args:
        engine: The database.
        instance: This process's instance id.
        heartbeat_s: How often the heartbeat is written (and the others looked at).
        dead_after_s: How long a heartbeat may stand still before its instance is dead.
        clock: The monotonic clock the watch measures with (tests drive it).
    """

    def __init__(
        self,
        engine: Engine,
        instance: str,
        *,
        heartbeat_s: float,
        dead_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_judged_dead: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.engine = engine
        #: Called when this instance finds its own row gone: another server judged it
        #: dead (a stall longer than ``dead_after_s``) and closed its sessions' rows.
        self.on_judged_dead = on_judged_dead
        self.instance = instance
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._beaten = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Close what this instance id left open and write the first heartbeat.

        The rounds that follow (:meth:`round`, every ``heartbeat_s``) are the
        ``liveness`` job of :class:`server.upkeep.Upkeep`.
        """
        closed = await self._db(
            lambda db: close_sessions(
                db,
                instance=self.instance,
                reason=SERVER_RESTART,
                detail=f"the server instance {self.instance} restarted",
                closed_by=self.instance,
            )
        )
        if closed:
            logger.warning(
                "closed %d session(s) an earlier run of instance %s left open",
                len(closed),
                self.instance,
            )
        await self._db(self.beat)

    async def stop(self) -> None:
        """Remove this instance's row (its sessions are closed by now; the rounds stopped)."""
        try:
            await self._db(self._remove)
        except Exception as exc:  # the database may be gone at shutdown
            logger.warning("could not remove instance %s's liveness record: %s", self.instance, exc)

    async def round(self) -> None:
        """One round: the heartbeat (ending this server's tunnels if another judged it
        dead), then the watch over the others. A database outage is logged, and the
        watch starts its observation window again."""
        try:
            was_judged_dead = await self._db(self.beat)
            if was_judged_dead and self.on_judged_dead is not None:
                logger.warning(
                    "instance %s was judged dead by another server: ending its tunnels",
                    self.instance,
                )
                await self.on_judged_dead()
            closed = await self._db(self.sweep)
        except Exception as exc:  # a database outage: keep beating, watch again after
            self._seen.clear()
            logger.warning("liveness heartbeat failed: %s", exc)
            return
        if closed:
            logger.warning(
                "closed %d session(s) of dead server instance(s): %s",
                len(closed),
                ", ".join(closed),
            )

    # -- one round (synchronous, in a worker thread) --------------------------------------

    def beat(self, db: Session) -> bool:
        """Write this instance's heartbeat (creating its row if it is missing).

        Returns:
            Whether the row had been removed since the last beat (by a server that
            judged this one dead).
        """
        row = db.get(ServerInstance, self.instance)
        now = utcnow()
        removed = row is None and self._beaten
        self._beaten = True
        if row is None:
            row = ServerInstance(
                id=self.instance,
                hostname=socket.gethostname()[:255],
                pid=os.getpid(),
                version=__version__[:32],
                started_at=now,
                heartbeat_at=now,
            )
        else:
            row.heartbeat_at = now
        db.add(row)
        db.commit()
        return removed

    def sweep(self, db: Session) -> list[str]:
        """Look at every other instance; close the sessions of those that are dead.

        Returns:
            The ids of the sessions closed.
        """
        now = self.clock()
        beats: dict[str, object] = {
            row.id: row.heartbeat_at for row in db.exec(select(ServerInstance)).all()
        }
        holders = db.exec(
            select(RemoteSession.instance)
            .where(col(RemoteSession.state).in_(OPEN_STATES))
            .distinct()
        ).all()
        watched = (set(beats) | set(holders)) - {self.instance}
        self._seen = {name: seen for name, seen in self._seen.items() if name in watched}
        closed: list[str] = []
        for name in sorted(watched):
            heartbeat = beats.get(name)
            seen = self._seen.get(name)
            if seen is None or seen.heartbeat != heartbeat:
                self._seen[name] = _Seen(heartbeat, now)
                continue
            if now - seen.since < self.dead_after_s:
                continue
            closed += close_sessions(
                db,
                instance=name,
                reason=SERVER_RESTART,
                detail=(
                    f"the server instance {name or '(unknown)'} that held the session stopped "
                    f"(no heartbeat for {self.dead_after_s:g} s)"
                ),
                closed_by=self.instance,
            )
            if heartbeat is not None:
                db.execute(
                    sa.delete(ServerInstance).where(
                        col(ServerInstance.id) == name,
                        col(ServerInstance.heartbeat_at) == heartbeat,
                    )
                )
                db.commit()
            self._seen.pop(name, None)
            logger.warning("server instance %s is dead: its sessions are closed", name or "''")
        return closed

    def holder_state(self, db: Session, instance: str) -> tuple[bool, str]:
        """Whether the holder of a session is gone, and what is known of it (for a 409).

        A holder with no liveness row is gone (a stopping server closes its sessions
        before removing its row; a dead one's row is removed by its sweeper); one
        whose heartbeat stood still for ``instance_dead_after_s`` here is too.
        """
        if instance == self.instance:
            return False, "this server"
        row = db.get(ServerInstance, instance)
        if row is None:
            return True, f"server instance {instance or '(unknown)'} is gone"
        seen = self._seen.get(instance)
        if (
            seen is not None
            and seen.heartbeat == row.heartbeat_at
            and self.clock() - seen.since >= self.dead_after_s
        ):
            return True, f"server instance {instance} stopped (last heartbeat {row.heartbeat_at})"
        return False, (
            f"server instance {instance} on {row.hostname or 'an unknown host'} "
            f"(last heartbeat {row.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}; judged dead after "
            f"{self.dead_after_s:g} s without one)"
        )

    def _remove(self, db: Session) -> None:
        db.execute(sa.delete(ServerInstance).where(col(ServerInstance.id) == self.instance))
        db.commit()

    async def _db(self, function: Callable[[Session], T]) -> T:
        def work() -> T:
            with Session(self.engine, expire_on_commit=False) as db:
                return function(db)

        return await asyncio.to_thread(work)
