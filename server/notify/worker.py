"""The notification worker: an upkeep job that plans events and delivers the outbox.

Every ``notify_interval_s`` (the ``notify`` job of :class:`server.upkeep.Upkeep`) it

1. tells of follow-ups that became overdue (:func:`server.surveys.followups.mark_overdue`)
   and turns the producers' events into messages (:func:`server.notify.planner.plan`),
2. delivers every message that is due: it takes a lease on each first (a
   conditional update), so several server processes never send one twice, and a
   process that dies mid-delivery lets it go when the lease runs out;
3. schedules a failure again after :func:`~server.notify.delivery.backoff_s`, and
   gives a message up (``dead``) after ``notify_max_attempts``;
4. sets the queued gauge, and forgets finished messages after
   ``telemetry_retention_days``.

Everything it knows is in the database, so retries survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import httpx2 as httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from server import metrics
from server.config import ServerSettings
from server.mail import check_smtp
from server.notify import planner
from server.notify.delivery import (
    WEBHOOK_TIMEOUT_S,
    DeliveryError,
    backoff_s,
    post_webhook,
    read_secret,
    send_email,
)
from server.notify.rules import NotifyRule
from server.notify.store import all_rules
from server.surveys.followups import mark_overdue
from shared.errors import ConfigError
from shared.ids import utcnow

logger = logging.getLogger(__name__)

OUTBOX = planner.OUTBOX
#: How long a worker holds a message it is delivering.
LEASE: Final = timedelta(seconds=120)
#: Messages delivered per run, and at once.
DELIVER_BATCH: Final = 100
PARALLEL: Final = 8


def check_notify(settings: ServerSettings) -> None:
    """Refuse at start what cannot work: an unreadable secret file, e-mail without SMTP.

    Raises:
        ConfigError: one line naming the rule and what is wrong.
    """
    for rule in settings.notify:
        if rule.secret_file is not None:
            read_secret(rule.secret_file, rule.name)
        if rule.email_to:
            try:
                check_smtp(settings.smtp)
            except ConfigError as exc:
                msg = f"notify rule {rule.name!r} sends e-mail, but {exc}"
                raise ConfigError(msg) from exc


class NotifyWorker:
    """Plans and delivers notifications for one server process (see the module)."""

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock

    def rules(self) -> list[NotifyRule]:
        """The rules in force: ``[[server.notify]]`` and the database's."""
        return all_rules(self.engine, self.settings)

    async def run(self) -> dict[str, int]:
        """One round: plan, deliver what is due, refresh the gauge and purge."""
        try:
            rules = await asyncio.to_thread(self.rules)
            await asyncio.to_thread(mark_overdue, self.engine, self.clock())
            result = await asyncio.to_thread(planner.plan, self.engine, rules, self.clock())
            done = await self.deliver_due({rule.name: rule for rule in rules})
            queued = await asyncio.to_thread(self._queued_and_purge)
        except (OperationalError, DBAPIError) as exc:  # the database is away: next time
            logger.warning("notification round failed: %s", exc.orig)
            return {}
        metrics.NOTIFY_QUEUED.set(queued)
        return {"events": result.events, "queued": result.queued, **done}

    # -- delivery ------------------------------------------------------------------------

    def _claim_due(self) -> list[dict[str, Any]]:
        now = self.clock()
        free = sa.or_(OUTBOX.c.lease_until.is_(None), OUTBOX.c.lease_until < now)
        due = [OUTBOX.c.status == "queued", OUTBOX.c.due_at <= now, free]
        claimed: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            ids = conn.scalars(
                sa.select(OUTBOX.c.id).where(*due).order_by(OUTBOX.c.due_at).limit(DELIVER_BATCH)
            ).all()
            for outbox_id in ids:
                taken = conn.execute(
                    sa.update(OUTBOX)
                    .where(OUTBOX.c.id == outbox_id, *due)
                    .values(lease_until=now + LEASE)
                ).rowcount
                if taken:
                    row = conn.execute(sa.select(OUTBOX).where(OUTBOX.c.id == outbox_id)).one()
                    claimed.append(dict(row._mapping))
        return claimed

    async def deliver_due(self, rules: dict[str, NotifyRule]) -> dict[str, int]:
        """Deliver the messages that are due; counts of ``sent``, ``failed``, ``dead``."""
        claimed = await asyncio.to_thread(self._claim_due)
        counts = {"sent": 0, "failed": 0, "dead": 0}
        if not claimed:
            return counts
        gate = asyncio.Semaphore(PARALLEL)
        async with httpx.AsyncClient(
            timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False, trust_env=False
        ) as client:

            async def one(row: dict[str, Any]) -> None:
                async with gate:
                    outcome = await self._deliver(row, rules.get(row["rule"]), client)
                counts[outcome] += 1

            await asyncio.gather(*(one(row) for row in claimed))
        return counts

    async def _deliver(
        self, row: dict[str, Any], rule: NotifyRule | None, client: httpx.AsyncClient
    ) -> str:
        channel = str(row["channel"])
        error: str | None = None
        if rule is None:
            error = f"rule {row['rule']!r} is gone"
        else:
            try:
                if channel == "webhook" and rule.webhook_url:
                    await post_webhook(
                        rule,
                        row["payload"],
                        int(row["id"]),
                        time.time(),
                        client,
                        self.settings.webhook_policy(),
                    )
                elif channel == "email" and rule.email_to:
                    await send_email(rule, row["payload"], self.settings.smtp)
                else:
                    error = f"rule {rule.name!r} no longer sends by {channel}"
            except (DeliveryError, ConfigError) as exc:
                error = str(exc)[:512]
        outcome = await asyncio.to_thread(self._record, row, error, final=rule is None)
        if outcome == "sent":
            metrics.NOTIFY_SENT.labels(channel).inc()
        else:
            metrics.NOTIFY_FAILED.labels(channel).inc()
            if outcome == "dead":
                metrics.NOTIFY_DEAD.labels(channel).inc()
            else:
                metrics.NOTIFY_RETRIED.labels(channel).inc()
        return outcome

    def _record(self, row: dict[str, Any], error: str | None, *, final: bool) -> str:
        now = self.clock()
        attempts = int(row["attempts"]) + 1
        values: dict[str, Any] = {"attempts": attempts, "lease_until": None, "last_error": error}
        if error is None:
            outcome = "sent"
            values.update(status="sent", sent_at=now)
        elif final or attempts >= self.settings.notify_max_attempts:
            outcome = "dead"
            values.update(status="dead")
            logger.warning(
                "notification %s (rule %s, %s) given up after %d attempt(s): %s",
                row["id"],
                row["rule"],
                row["channel"],
                attempts,
                error,
            )
        else:
            outcome = "failed"
            wait = backoff_s(
                attempts, self.settings.notify_retry_base_s, self.settings.notify_retry_max_s
            )
            values.update(due_at=now + timedelta(seconds=wait))
            logger.info(
                "notification %s (rule %s, %s) failed (attempt %d), next in %.3g s: %s",
                row["id"],
                row["rule"],
                row["channel"],
                attempts,
                wait,
                error,
            )
        with self.engine.begin() as conn:
            conn.execute(sa.update(OUTBOX).where(OUTBOX.c.id == row["id"]).values(**values))
        return outcome

    def _queued_and_purge(self) -> int:
        cutoff = self.clock() - timedelta(days=self.settings.telemetry_retention_days)
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(OUTBOX).where(
                    OUTBOX.c.status.in_(("sent", "dead", "cancelled")), OUTBOX.c.created_at < cutoff
                )
            )
            queued = conn.scalar(
                sa.select(sa.func.count()).select_from(OUTBOX).where(OUTBOX.c.status == "queued")
            )
        return int(queued or 0)
