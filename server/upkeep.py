"""The server's periodic jobs, in one place: each a named job on its own interval.

:class:`Upkeep` runs every job in its own task from the app's lifespan: once
at start (or first after one interval), then every ``interval_s`` (or at once
when :meth:`Upkeep.wake` asks). A job that fails is logged and runs again next
time; it never takes the server down. Jobs decide with an injected clock, so
tests move time instead of sleeping. The lifespan registers them all:

- ``broker-update`` (``broker_update_retry_s``) and ``pki`` (``pki_check_interval_s``):
  :class:`PkiUpkeep`, below;
- ``liveness`` (``instance_heartbeat_s``, first after one): this instance's
  heartbeat, and the sessions of dead instances closed
  (:meth:`server.sessions.liveness.InstanceLiveness.round`);
- ``silent-devices`` (a third of ``offline_after_s``, at most 15 s): devices silent
  for ``offline_after_s`` marked offline, the fleet gauges (:class:`FleetUpkeep`);
- ``rollups-retention`` (300 s, first after one): hourly rollups of the hours that
  got samples, then retention (:class:`FleetUpkeep`);
- ``access`` (``access_check_interval_s``, first after one; at once when this process
  withdrew an access): live sessions and channels whose user or token lost its access
  end (:meth:`server.sessions.access.AccessWatch.check`);
- ``operator-heartbeat`` (a third of ``operator_heartbeat_timeout_s``, at most 15 s):
  sessions whose operator's client stopped beating are closed, ``operator_gone``
  (:class:`server.sessions.heartbeat.OperatorHeartbeat`).
- ``notify`` (``notify_interval_s``; at once when a test message is queued): the
  producers' events become messages, due messages are delivered or scheduled again
  (:meth:`server.notify.worker.NotifyWorker.run`).

The PKI's jobs (:class:`PkiUpkeep`):

- ``broker-update``: a broker update (CRL, ACL deny block, broker certificate,
  reload) that is not applied yet is tried again (``reload_by = server``), or
  the reload helper is triggered again (``reload_by = helper``); the gauges of
  pending revocations follow.
- ``pki``: rewrites the CRL before it expires (the broker refuses every client
  once it has), renews the broker's and the server's own MQTT certificates
  before they expire, queues the broker update, loads the server's renewed
  certificate into its MQTT connections, and sets the expiry gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from provisioning.broker_update import (
    BrokerUpdateState,
    apply_broker_update,
    load_update_state,
    request_broker_update,
    touch_request,
)
from provisioning.ca import CertificateAuthority
from provisioning.pki import CaNotInitialized, PkiPaths, certificate_not_after
from server import metrics
from server.config import ServerSettings
from server.ingest import maintenance
from shared.ids import utcnow

if TYPE_CHECKING:
    from server.notify.worker import NotifyWorker
    from server.sessions.access import AccessWatch
    from server.sessions.liveness import InstanceLiveness

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: The window of the ``fieldlink_device_certificates_expiring`` gauge.
DEVICE_EXPIRY_WINDOW: Final = timedelta(days=30)


@dataclass(frozen=True)
class Job:
    """A periodic job: ``run`` every ``interval_s`` seconds, first at start
    (``at_start``) or after one interval."""

    name: str
    interval_s: float
    run: Callable[[], Awaitable[object]]
    at_start: bool = True


class Upkeep:
    """Runs the server's periodic jobs, each in its own task."""

    def __init__(self, jobs: list[Job] | None = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        for job in jobs or []:
            self.add(job)

    def add(self, job: Job) -> None:
        """Register a job; it starts at once when the upkeep runs already."""
        if job.name in self._jobs:
            msg = f"upkeep job {job.name!r} is already registered"
            raise ValueError(msg)
        self._jobs[job.name] = job
        self._wakes[job.name] = asyncio.Event()
        if self._loop is not None:
            self._tasks[job.name] = asyncio.create_task(self._every(job), name=f"upkeep-{job.name}")

    async def remove(self, *names: str) -> None:
        """Stop these jobs (waiting for a run in progress) and forget them.

        For a job whose owner stops before the upkeep does: the liveness job
        must not beat again once its instance's row is removed.
        """
        for name in names:
            self._jobs.pop(name, None)
            self._wakes.pop(name, None)
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def job_names(self) -> list[str]:
        """The registered jobs' names."""
        return list(self._jobs)

    async def start(self) -> None:
        """Start every job's task."""
        self._loop = asyncio.get_running_loop()
        for job in self._jobs.values():
            self._tasks[job.name] = asyncio.create_task(self._every(job), name=f"upkeep-{job.name}")

    async def stop(self) -> None:
        """Cancel the jobs and wait for them."""
        tasks = list(self._tasks.values())
        self._tasks = {}
        self._loop = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self, name: str) -> None:
        """Run a job now rather than at its next interval; callable from any thread."""
        event = self._wakes.get(name)
        if event is None or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(event.set)

    async def run_once(self, name: str) -> object:
        """Run one job now, in the caller's task (tests, and the first run)."""
        return await self._jobs[name].run()

    async def _every(self, job: Job) -> None:
        wake = self._wakes[job.name]
        if not job.at_start:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=job.interval_s)
            wake.clear()
        while True:
            try:
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # a job's failure is logged; the next run may succeed
                logger.exception("upkeep job %s failed", job.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=job.interval_s)
            wake.clear()


def set_broker_gauges(state: BrokerUpdateState) -> None:
    """Export the broker update's state on ``/metrics``."""
    metrics.BROKER_REVOCATIONS_PENDING.set(len(state.revocations) if state.pending else 0)
    since = state.pending_since if state.pending else None
    metrics.BROKER_UPDATE_PENDING_SINCE.set(since.timestamp() if since else 0)
    metrics.BROKER_UPDATE_ATTEMPTS.set(state.attempts if state.pending else 0)


class PkiUpkeep:
    """The PKI's periodic jobs for one server (see the module's docstring)."""

    BROKER_JOB: Final = "broker-update"
    PKI_JOB: Final = "pki"

    def __init__(
        self,
        settings: ServerSettings,
        *,
        clock: Clock = utcnow,
        broker_pid: int | None = None,
        on_server_certificate: Callable[[], object] | None = None,
        engine: Engine | None = None,
    ) -> None:
        """Jobs for ``settings.state_dir/pki``.

        Args:
            settings: The server's settings (``state_dir``, the intervals, ``broker_cert``).
            clock: The current time (tests move it).
            broker_pid: The broker's pid when this process started it.
            on_server_certificate: Called after the server's MQTT certificate was renewed
                (default: load it into the live MQTT TLS contexts).
            engine: The database, to audit what the PKI job changed (``pki.crl_refresh``,
                ``pki.renew``).
        """
        self.settings = settings
        self.paths = PkiPaths.under(settings.state_dir)
        self.clock = clock
        self.broker_pid = broker_pid
        self._on_server_certificate = on_server_certificate
        self._engine = engine

    def jobs(self) -> list[Job]:
        """The two jobs, for :class:`Upkeep`."""
        return [
            Job(self.BROKER_JOB, self.settings.broker_update_retry_s, self.broker_update),
            Job(self.PKI_JOB, self.settings.pki_check_interval_s, self.pki_check),
        ]

    def _has_ca(self) -> bool:
        return self.paths.ca_key.exists()

    async def broker_update(self) -> BrokerUpdateState | None:
        """Apply (or trigger again) a broker update that is pending; export its state."""
        if not self._has_ca():
            return None
        state = await asyncio.to_thread(load_update_state, self.paths)
        if state.pending:
            if state.reload_by == "server":
                state = await asyncio.to_thread(
                    apply_broker_update, self.paths, broker_pid=self.broker_pid, now=self.clock()
                )
            else:
                # The helper failed or never ran: its path unit fires on this write.
                await asyncio.to_thread(touch_request, self.paths, state.generation)
        set_broker_gauges(state)
        return state

    def _check(self, now: datetime) -> list[str]:
        ca = CertificateAuthority.load(self.settings.state_dir)
        crl_refreshed = ca.refresh_crl_if_due(now)
        if crl_refreshed:
            logger.info("rewrote the CRL (next update %s)", ca.crl_next_update())
        renewed = ca.renew_service_certificates_if_due(now)
        if crl_refreshed or "broker" in renewed:
            request_broker_update(self.paths, now=now)
        metrics.PKI_EXPIRY.labels("ca").set(ca.cert.not_valid_after_utc.timestamp())
        crl_until = ca.crl_next_update()
        metrics.PKI_EXPIRY.labels("crl").set(crl_until.timestamp() if crl_until else 0)
        for item, path in (
            ("broker_cert", self.paths.broker_cert),
            ("server_cert", self.settings.broker_cert or self.paths.server_client_cert),
        ):
            until = certificate_not_after(path)
            metrics.PKI_EXPIRY.labels(item).set(until.timestamp() if until else 0)
        metrics.DEVICE_CERTS_EXPIRING.set(ca.devices_expiring(DEVICE_EXPIRY_WINDOW, now))
        return (["crl"] if crl_refreshed else []) + renewed

    async def pki_check(self) -> list[str]:
        """Refresh the CRL, renew the service certificates when due, set the expiry gauges.

        Returns:
            What changed: ``crl``, ``broker``, ``server``.
        """
        if not self._has_ca():
            return []
        try:
            changed = await asyncio.to_thread(self._check, self.clock())
        except CaNotInitialized:
            return []
        if "server" in changed:
            if self._on_server_certificate is not None:
                self._on_server_certificate()
            else:
                from server.mqtt import reload_client_certificates

                count = reload_client_certificates(self.paths.server_client_cert)
                logger.info("the renewed server certificate is loaded in %d MQTT client(s)", count)
        if changed and self._engine is not None:
            await asyncio.to_thread(self._audit, self._engine, changed)
        if "crl" in changed or "broker" in changed:
            await self.broker_update()
        return changed

    @staticmethod
    def _audit(engine: Engine, changed: list[str]) -> None:
        from sqlmodel import Session

        from server import audit

        with Session(engine) as db:
            for item in changed:
                action, target = (
                    ("pki.crl_refresh", "pki:crl")
                    if item == "crl"
                    else ("pki.renew", f"pki:{item}_cert")
                )
                audit.record(db, actor=audit.SYSTEM_ACTOR, action=action, target=target)
            db.commit()


class FleetUpkeep:
    """The fleet's periodic jobs: silent devices and the gauges; rollups and retention.

    The SQL is :mod:`server.ingest.maintenance`'s; each run holds ``lock`` (the
    ingest's :attr:`~server.ingest.service.IngestService.db_lock`), so that it
    never races this process's batches for the same rows.

    Args:
        settings: ``offline_after_s`` and the retention days.
        engine: The database.
        lock: Held around each run (default: a lock of its own).
        sweep_interval_s: How often silent devices are marked offline and the
            gauges refreshed (default: a third of ``offline_after_s``, at most 15 s).
        maintenance_interval_s: How often rollups and retention run.
        clock: The current time.
    """

    SILENT_JOB: Final = "silent-devices"
    ROLLUP_JOB: Final = "rollups-retention"

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        *,
        lock: threading.Lock | None = None,
        sweep_interval_s: float | None = None,
        maintenance_interval_s: float = 300.0,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.lock = lock or threading.Lock()
        self.sweep_interval_s = sweep_interval_s or min(settings.offline_after_s / 3, 15.0)
        self.maintenance_interval_s = maintenance_interval_s
        self.clock = clock
        self._last_rollup = clock() - timedelta(hours=2)

    def jobs(self) -> list[Job]:
        """The two jobs, for :class:`Upkeep`."""
        return [
            Job(self.SILENT_JOB, self.sweep_interval_s, self._sweep_job),
            Job(
                self.ROLLUP_JOB,
                self.maintenance_interval_s,
                self._maintenance_job,
                at_start=False,
            ),
        ]

    async def sweep(self) -> list[str]:
        """Mark silent devices offline and refresh the fleet gauges; returns those marked."""
        silent, (online, registered, alerts) = await asyncio.to_thread(self._sweep_blocking)
        metrics.DEVICES_ONLINE.set(online)
        metrics.DEVICES_REGISTERED.set(registered)
        metrics.ALERTS_OPEN.set(alerts)
        return silent

    def _sweep_blocking(self) -> tuple[list[str], tuple[int, int, int]]:
        with self.lock:
            silent = maintenance.mark_silent(
                self.engine, self.settings.offline_after_s, self.clock()
            )
            return silent, maintenance.fleet_counts(self.engine)

    async def run_maintenance(self) -> None:
        """Roll up the hours that got samples since the last run, then apply retention."""
        now = self.clock()
        since = self._last_rollup - timedelta(minutes=1)

        def blocking() -> tuple[int, tuple[int, int]]:
            with self.lock:
                rows = maintenance.rollup_hours(self.engine, since)
                return rows, maintenance.purge_old(self.engine, self.settings, now)

        rows, (samples, rollups) = await asyncio.to_thread(blocking)
        self._last_rollup = now
        logger.info(
            "rollups: %d rows written; retention: %d samples and %d rollups deleted",
            rows,
            samples,
            rollups,
        )

    async def _sweep_job(self) -> None:
        try:
            await self.sweep()
        except (OperationalError, DBAPIError) as exc:  # the database is away: next time
            logger.warning("sweep failed: %s", exc.orig)

    async def _maintenance_job(self) -> None:
        try:
            await self.run_maintenance()
        except (OperationalError, DBAPIError) as exc:
            logger.warning("rollup or retention failed: %s", exc.orig)


#: The liveness job's name.
LIVENESS_JOB: Final = "liveness"


def liveness_job(liveness: InstanceLiveness) -> Job:
    """The instance's heartbeat and the sweep of dead instances' sessions, every
    ``heartbeat_s`` (the first beat is :meth:`InstanceLiveness.start`'s)."""
    return Job(LIVENESS_JOB, liveness.heartbeat_s, liveness.round, at_start=False)


#: The access job's name.
ACCESS_JOB: Final = "access"


def access_job(watch: AccessWatch) -> Job:
    """The re-check of live sessions' and channels' access, every ``watch.interval_s``;
    :meth:`~server.sessions.access.AccessWatch.check_now` wakes it."""
    return Job(ACCESS_JOB, watch.interval_s, watch.check, at_start=False)


#: The notification worker's job name.
NOTIFY_JOB: Final = "notify"


def notify_job(worker: NotifyWorker) -> Job:
    """The notification worker's round every ``notify_interval_s``; woken at once when
    a test message is queued."""
    return Job(NOTIFY_JOB, worker.settings.notify_interval_s, worker.run)
