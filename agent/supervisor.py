"""The agent's main loop: sample on schedule into the outbox, publish from it while connected.

Sampling never waits for the broker: when it is down, samples pile up in the
outbox (bounded) and the :class:`~agent.health.link.BrokerLink` drains them in order
once it is back, then keeps what it sent for a while: when a server announces
itself, the link re-sends what might have reached a broker without a server
subscribed (see :mod:`agent.health.link`).

Signed commands arriving on the device's ``cmd`` topic are verified and run by
a :class:`~agent.remote.commands.CommandDispatcher` (see :mod:`agent.remote.commands`).

Remote sessions (``session.open`` / ``session.close``) are run by a
:class:`~agent.remote.sessions.SessionController` once :meth:`Agent.enable_sessions`
has registered it; the daemon also serves the local control channel
(:mod:`agent.remote.control`) through which the site approves, denies and ends them.
A stopping agent ends its sessions and publishes their ``session.closed``
before its ``shutdown`` state.

An enrolled agent also keeps its certificate current: a
:class:`~agent.identity.renewer.CertificateRenewer` checks it at start and every
``renew_check_interval_s``, renews it when due, and has the link reconnect
with the new pair (see :mod:`agent.identity.renew`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.config import AgentSettings, default_host_key_file
from agent.health.collectors.base import Collector, Reading, collect_all
from agent.health.link import BrokerLink
from agent.health.link_setup import DeviceLogger, tls_context
from agent.health.outbox import Outbox, SqliteOutbox
from agent.health.samples import SampleBuilder
from agent.remote.commands import (
    REPLAY_CACHE_FILENAME,
    CommandDispatcher,
    CommandRegistry,
    default_registry,
)
from agent.remote.control import ControlError, ControlServer, control_socket_path
from agent.remote.policy import SitePolicy
from agent.remote.session_process import SPARE_LINGER_S
from agent.remote.session_runners import SessionFactory
from agent.remote.sessions import SessionController
from shared.broker_url import BrokerAddress

if TYPE_CHECKING:
    from agent.health.gateway import SiteGateway
    from agent.identity.renewer import CertificateRenewer
    from agent.remote.commands import Outgoing

logger = logging.getLogger(__name__)

#: How long a stopping agent waits for the broker to take its ``shutdown`` state.
STOP_GRACE_S = 5.0


class Agent:
    """One device's agent: collectors, sample numbering, outbox and broker link.

    Build it directly (tests, the simulator) or with :func:`agent_from_settings`;
    then ``await agent.run()`` until :meth:`stop` is called or the task is cancelled.
    Either way it publishes its ``shutdown`` state before returning.

    Args:
        device_id: The device.
        broker: Where the broker listens.
        collectors: What each sample is made of (system, device profile...).
        outbox: Where samples wait for the broker.
        interval_s: Seconds between samples.
        start_delay_s: Wait before connecting and sampling (staggers a simulated fleet).
        keepalive_s: MQTT keepalive.
        tls: TLS context for ``mqtts://`` (``None`` for plain MQTT).
        reconnect_min_s: Floor of the reconnect delay.
        reconnect_max_s: Cap of the reconnect delay.
        collector_timeout_s: Time bound of each collector call.
        inflight_window: Samples published at once while draining.
        boot_id: This run's id (random by default).
        rng: Randomness of the reconnect jitter.
        command_key_file: The pinned command public key (``None``: every command is refused).
        replay_cache_path: Where the ids of accepted commands are kept (``None``: in memory).
        command_registry: The command handlers (default:
            :func:`agent.remote.commands.default_registry`).
    """

    def __init__(
        self,
        device_id: str,
        broker: BrokerAddress,
        collectors: Sequence[Collector],
        outbox: Outbox,
        *,
        interval_s: float = 30.0,
        start_delay_s: float = 0.0,
        keepalive_s: int = 30,
        tls: ssl.SSLContext | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        collector_timeout_s: float = 5.0,
        inflight_window: int = 20,
        boot_id: str | None = None,
        rng: random.Random | None = None,
        command_key_file: Path | None = None,
        replay_cache_path: Path | None = None,
        command_registry: CommandRegistry | None = None,
    ) -> None:
        self.device_id = device_id
        self.collectors = list(collectors)
        self.outbox = outbox
        self._interval_s = interval_s
        self.start_delay_s = start_delay_s
        self._configured_collector_timeout_s = collector_timeout_s
        self.collector_timeout_s = min(collector_timeout_s, interval_s)
        self.samples = SampleBuilder(device_id, boot_id)
        self._stopping = asyncio.Event()
        # Set after the sessions have reported: the link outlives them.
        self._link_stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._reschedule = asyncio.Event()
        self.commands = CommandDispatcher(
            device_id,
            command_key_file,
            replay_cache_path,
            command_registry if command_registry is not None else default_registry(self),
        )
        self.link = BrokerLink(
            device_id,
            broker,
            outbox,
            boot_id=self.samples.boot_id,
            wake=self._wake,
            keepalive_s=keepalive_s,
            tls=tls,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            inflight_window=inflight_window,
            rng=rng,
            commands=self.commands,
        )
        #: Keeps the certificate current while the agent runs (``None``: no renewal).
        self.certificate_renewer: CertificateRenewer | None = None
        #: Runs remote sessions (``None`` until :meth:`enable_sessions`).
        self.sessions: SessionController | None = None
        #: Where the local control channel listens (``None``: not served).
        self.control_socket: Path | None = None
        #: The equipment this agent watches as a site gateway (``None``: none).
        self.gateway: SiteGateway | None = None
        self._log = DeviceLogger(logger, {"device_id": device_id})

    def enable_sessions(
        self,
        policy: SitePolicy,
        *,
        host_key_path: Path,
        proxy: str | Literal[True] | None = True,
        ca_file: Path | None = None,
        control_socket: Path | None = None,
        session_factory: SessionFactory | None = None,
        in_process: bool = False,
        spare_linger_s: float = 0.0,
        watched: Mapping[str, tuple[str, Mapping[str, int]]] | None = None,
    ) -> SessionController:
        """Accept remote sessions under ``policy`` (registers the ``session.*`` handlers).

        Args:
            policy: The site policy.
            host_key_path: The SSH host key the server pinned.
            proxy: How to reach the server's tunnel endpoint (see :class:`SessionController`).
            ca_file: Extra CA certificates for ``wss://``.
            control_socket: Serve the local control channel there while running.
            session_factory: Makes the sessions (tests).
            in_process: Serve sessions in this process, not in session processes.
            spare_linger_s: How long a spare session process waits for the next
                session (0: none; the daemon's agent keeps one for a minute).
            watched: The devices this agent watches as a site gateway, id to address and
                web page ports: a session to one reaches its web page (``[agent.policy]
                watched_services``).

        Returns:
            The controller.
        """
        controller = SessionController(
            self.device_id,
            policy,
            host_key_path=host_key_path,
            publish=self._publish_event,
            proxy=proxy,
            ca_file=ca_file,
            session_factory=session_factory,
            in_process=in_process,
            spare_linger_s=spare_linger_s,
            watched=watched,
        )
        controller.register(self.commands.registry)
        self.sessions = controller
        self.control_socket = control_socket
        return controller

    def _publish_event(self, event: Outgoing) -> None:
        self.link.publish_event(event.topic, event.payload)

    @property
    def boot_id(self) -> str:
        """This run's id."""
        return self.samples.boot_id

    @property
    def interval_s(self) -> float:
        """Seconds between health samples."""
        return self._interval_s

    def set_interval(self, interval_s: float) -> None:
        """Sample every ``interval_s`` seconds, the next one ``interval_s`` from now.

        Raises:
            ValueError: when ``interval_s`` is not positive.
        """
        if not interval_s > 0:
            msg = "interval_s must be greater than 0"
            raise ValueError(msg)
        self._interval_s = interval_s
        self.collector_timeout_s = min(self._configured_collector_timeout_s, interval_s)
        self._reschedule.set()

    async def collect(self) -> Reading:
        """Observe once with every collector, without storing a sample (diagnostics)."""
        return await collect_all(self.collectors, self.collector_timeout_s)

    async def outbox_depth(self) -> int:
        """Samples waiting in the outbox for the broker."""
        return await self.outbox.count()

    def request_resend(self) -> None:
        """Re-publish the samples sent on this connection still in the resend window."""
        self.link.request_resend()

    def request_via_resend(self, device_id: str) -> bool:
        """Re-publish a watched device's samples; ``False`` when this agent does not watch it."""
        gateway = self.gateway
        if gateway is None or not gateway.watches(device_id):
            return False
        gateway.request_resend()
        return True

    def stop(self) -> None:
        """Ask the agent to stop: it publishes its ``shutdown`` state and :meth:`run` returns."""
        self._stopping.set()

    async def run(self) -> None:
        """Sample and publish until :meth:`stop` is called or this task is cancelled."""
        if self.start_delay_s > 0:
            try:
                async with asyncio.timeout(self.start_delay_s):
                    await self._stopping.wait()
                    return
            except TimeoutError:
                pass
        self._log.info("agent started: boot_id %s, every %.1f s", self.boot_id, self.interval_s)
        self._link_stopping.clear()
        control = await self._start_control()
        sampler = asyncio.create_task(self._sample_forever())
        link = asyncio.create_task(self.link.run(self._link_stopping))
        renewer = (
            asyncio.create_task(self.certificate_renewer.run(self._stopping))
            if self.certificate_renewer is not None
            else None
        )
        watcher = (
            asyncio.create_task(self.gateway.run(self._stopping, self._interval_s))
            if self.gateway is not None
            else None
        )
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            sampler.cancel()
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            if control is not None:
                await control.close()
            if self.sessions is not None:
                # Their session.closed events queue up before the link says "shutdown".
                await self.sessions.shutdown()
            self._link_stopping.set()
            # Shielded so that a cancelled run() still lets the link say "shutdown".
            try:
                await asyncio.wait_for(asyncio.shield(link), STOP_GRACE_S)
            except (TimeoutError, asyncio.CancelledError):
                link.cancel()
            await asyncio.gather(sampler, link, return_exceptions=True)
            self._log.info("agent stopped after %d samples", self.samples.next_seq)

    async def _start_control(self) -> ControlServer | None:
        if self.sessions is None or self.control_socket is None:
            return None
        control = ControlServer(self.control_socket, self.sessions)
        try:
            await control.start()
        except ControlError as exc:
            # Sessions still run; only the site's local approve/deny/end is missing.
            self._log.error("no local control of sessions: %s", exc)
            return None
        return control

    async def sample_once(self) -> bytes:
        """Collect one sample and store it in the outbox; return its payload."""
        reading = await collect_all(self.collectors, self.collector_timeout_s)
        dropped = await self.outbox.take_dropped()
        payload = self.samples.build(reading, dropped=dropped)
        await self.outbox.put(payload)
        self._wake.set()
        return payload

    async def _sample_forever(self) -> None:
        next_at = time.monotonic()
        while True:
            try:
                await self.sample_once()
            except Exception:
                # A broken collector is left out inside collect_all; this is the outbox
                # failing (disk full...). Keep trying at the next interval.
                self._log.exception("could not store a sample")
            next_at += self._interval_s
            now = time.monotonic()
            if next_at < now:
                skipped = int((now - next_at) // self._interval_s) + 1
                self._log.warning("sampling fell %d interval(s) behind; skipping ahead", skipped)
                next_at += skipped * self._interval_s
            next_at = await self._wait_until(next_at)

    async def _wait_until(self, next_at: float) -> float:
        """Sleep until ``next_at``; a new interval moves it to one interval from then on."""
        while True:
            self._reschedule.clear()
            try:
                async with asyncio.timeout(max(0.0, next_at - time.monotonic())):
                    await self._reschedule.wait()
            except TimeoutError:
                return next_at
            next_at = time.monotonic() + self._interval_s


async def agent_from_settings(
    settings: AgentSettings, collectors: Sequence[Collector] | None = None
) -> Agent:
    """Build the agent a configuration describes: system collector, profile, disk outbox.

    Args:
        settings: The agent's configuration.
        collectors: Replace the configured collectors (tests).

    Raises:
        ConfigError: when the profile, TLS files or state directory cannot be used.
    """
    if collectors is None:
        from agent.health.collectors import create_collector
        from agent.health.profiles import ProfileOptions, create_profile

        collectors = [create_collector("system")]
        if settings.profile != "none":
            options = ProfileOptions(
                device_id=settings.device_id,
                seed=settings.seed,
                targets=settings.profile_targets,
            )
            collectors.append(create_profile(settings.profile, options, simulate=settings.simulate))
    renewal = (
        settings.server_url is not None
        and settings.ca_file is not None
        and settings.cert_file is not None
    )
    if renewal:
        from agent.identity.renew import recover_interrupted_renewal

        await asyncio.to_thread(recover_interrupted_renewal, settings)
    tls = tls_context(settings.broker, settings.ca_file, settings.cert_file, settings.key_file)
    outbox = await SqliteOutbox.open(
        settings.state_dir,
        settings.outbox_max_samples,
        resend_window_s=settings.resend_window_s,
        resend_max_samples=settings.resend_max_samples,
    )
    agent = Agent(
        settings.device_id,
        settings.broker,
        collectors,
        outbox,
        interval_s=settings.interval_s,
        keepalive_s=settings.keepalive_s,
        tls=tls,
        reconnect_min_s=settings.reconnect_min_s,
        reconnect_max_s=settings.reconnect_max_s,
        collector_timeout_s=settings.collector_timeout_s,
        inflight_window=settings.inflight_window,
        command_key_file=settings.command_key_file,
        replay_cache_path=settings.state_dir / REPLAY_CACHE_FILENAME,
    )
    watched: dict[str, tuple[str, Mapping[str, int]]] = {}
    if settings.devices:
        from agent.config_devices import watched_devices
        from agent.health.gateway import SiteGateway

        devices = watched_devices(settings.devices)
        watched = {device.id: (device.target.host, device.web_ports) for device in devices}
        agent.gateway = SiteGateway(
            settings.device_id,
            devices,
            agent.link,
            timeout_s=min(settings.collector_timeout_s, settings.interval_s),
            state_dir=settings.state_dir,
            max_samples=settings.outbox_max_samples,
            resend_window_s=settings.resend_window_s,
            resend_max_samples=settings.resend_max_samples,
        )
    if renewal:
        from agent.identity.renewer import CertificateRenewer

        agent.certificate_renewer = CertificateRenewer.from_settings(settings, agent.link)
    host_key = settings.ssh_host_key_file or default_host_key_file(settings.cert_file, None)
    if settings.command_key_file is not None and not host_key.exists():
        logger.warning("remote sessions will fail: no SSH host key at %s", host_key)
    agent.enable_sessions(
        settings.site_policy,
        host_key_path=host_key,
        proxy=settings.proxy,
        ca_file=settings.ca_file,
        control_socket=control_socket_path(settings.state_dir),
        # Session processes give the SSH stack's memory back, at the cost of a slower
        # first click (the stack loads in a new interpreter): the site chooses.
        in_process=not settings.session_process,
        spare_linger_s=SPARE_LINGER_S if settings.session_process else 0.0,
        watched=watched,
    )
    return agent
