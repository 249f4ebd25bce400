"""Signed commands from the server: build, sign, publish, and await the device's result.

A :class:`CommandPublisher` keeps an MQTT connection of its own (reconnecting
with jittered backoff) for publishing commands at QoS 1 on each device's
``cmd`` topic. Each command is a :class:`shared.models.Command` with a fresh
id, ``expires_at = issued_at + ttl`` (60 s by default) and the device's id,
signed with the CA's Ed25519 command key (:func:`shared.signing.sign_command`).
Commands are refused for unknown and revoked devices before anything is signed.

Results come back through the ingest: :meth:`CommandPublisher.deliver_result`
is the :class:`~server.ingest.service.IngestService` ``on_command_result``
hook, and wakes whoever awaits that command's result. In the app's lifespan::

    commands = CommandPublisher.from_ca(settings, engine)
    await stack.enter_async_context(commands)
    ingest = IngestService(settings, engine, on_command_result=commands.deliver_result)

The ingest splits the fleet among server processes (shared subscription), so
with several processes a result may reach another process than the one
waiting; with one process (the default) every result comes here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import aiomqtt
from sqlalchemy.engine import Engine

from server.config import ServerSettings
from server.db import session_scope
from server.models.device import Device
from server.mqtt import make_client
from shared import topics
from shared.errors import Conflict, FieldlinkError, NotFound, UnavailableError
from shared.ids import new_id, utcnow
from shared.models import Command, CommandResult, dump_message
from shared.signing import sign_command

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

#: A command's lifetime unless the caller says otherwise.
DEFAULT_TTL: Final = timedelta(seconds=60)
#: How long :meth:`CommandPublisher.execute` waits for the result by default.
DEFAULT_RESULT_TIMEOUT_S: Final = 30.0
#: How long a publish waits for the broker (connection and PUBACK).
PUBLISH_TIMEOUT_S: Final = 10.0
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
#: Results are awaited at most this long after their command expired, then forgotten.
RESULT_GRACE: Final = timedelta(seconds=60)


class CommandError(FieldlinkError):
    """A command could not be sent, or its result did not come."""


class DeviceRevoked(CommandError, Conflict):
    """The device is revoked: the server signs no command for it."""


class CommandTimeout(CommandError, UnavailableError):
    """The device sent no result within the time allowed."""


class BrokerUnavailable(CommandError, UnavailableError):
    """The broker did not take the command (not connected, or no PUBACK in time)."""


@dataclass(slots=True)
class PendingCommand:
    """A published command whose result may still come.

    Attributes:
        command: The signed command as published.
    """

    command: Command
    _result: asyncio.Future[CommandResult] = field(repr=False)
    _forget: Callable[[str], None] = field(repr=False)

    @property
    def device_id(self) -> str:
        """The device it is for."""
        assert self.command.device_id is not None  # noqa: S101 - every sent command has one
        return self.command.device_id

    async def result(self, timeout_s: float = DEFAULT_RESULT_TIMEOUT_S) -> CommandResult:
        """Wait for the device's result (``ok`` false when it refused or failed).

        Raises:
            CommandTimeout: when no result came within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._result)
        except TimeoutError as exc:
            msg = (
                f"no result from {self.device_id} for {self.command.type} "
                f"{self.command.id} within {timeout_s:g} s"
            )
            raise CommandTimeout(msg) from exc
        finally:
            if self._result.done():
                self._forget(self.command.id)


class CommandPublisher:
    """Signs commands with the CA's command key, publishes them, and matches their results.

    Use it as an async context manager (or :meth:`start` / :meth:`stop`).

    Args:
        settings: The server's settings (broker URL, TLS files, credentials).
        engine: The database: commands are refused for unknown and revoked devices.
        signing_key: The Ed25519 command-signing key (:meth:`from_ca` reads the CA's).
        identifier: The MQTT client id (default: ``fieldlink-commands-<random>``).
        default_ttl: A command's lifetime unless :meth:`send` is told otherwise.
    """

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        signing_key: Ed25519PrivateKey,
        *,
        identifier: str | None = None,
        default_ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.default_ttl = default_ttl
        self.identifier = identifier or f"fieldlink-commands-{new_id()[:12]}"
        self._signing_key = signing_key
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[str, datetime, asyncio.Future[CommandResult]]] = {}
        self._rng = random.Random()  # noqa: S311 - reconnect jitter, not security

    @classmethod
    def from_ca(cls, settings: ServerSettings, engine: Engine, **options: Any) -> Self:
        """A publisher signing with the command key of the CA under ``settings.state_dir``.

        Raises:
            CaNotInitialized: when there is no CA yet (``fieldlink ca init``).
            KeyFileError: when the command key cannot be read.
        """
        from provisioning.ca import CertificateAuthority

        key = CertificateAuthority.load(settings.state_dir).command_signing_key()
        return cls(settings, engine, key, **options)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker in the background (and keep reconnecting)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="command-publisher")

    async def stop(self) -> None:
        """Disconnect; whoever still awaits a result gets :class:`CommandTimeout` at its timeout."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._connected.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        """Wait until the broker connection is up.

        Raises:
            BrokerUnavailable: when it is not within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            msg = "the command publisher is not connected to the broker"
            raise BrokerUnavailable(msg) from exc

    async def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        while True:
            try:
                async with make_client(self.settings, identifier=self.identifier) as client:
                    self._client = client
                    self._connected.set()
                    backoff = RECONNECT_MIN_S
                    logger.info("command publisher connected as %s", self.identifier)
                    # Nothing is subscribed: this only returns (raising) when the link breaks.
                    async for _message in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                logger.warning("command publisher: broker unavailable (%s)", exc)
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(self._rng.uniform(RECONNECT_MIN_S, backoff))
            backoff = min(RECONNECT_MAX_S, backoff * 2)

    # -- sending -----------------------------------------------------------------------

    def _check_device(self, device_id: str) -> None:
        with session_scope(self.engine) as session:
            device = session.get(Device, device_id)
            if device is None:
                msg = f"no device {device_id!r}"
                raise NotFound(msg)
            if device.revoked_at is not None:
                msg = f"device {device_id!r} is revoked: no command is signed for it"
                raise DeviceRevoked(msg)

    def build(
        self,
        device_id: str,
        command_type: str,
        body: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        now: datetime | None = None,
    ) -> Command:
        """A signed command for ``device_id`` (not checked against the database, not sent).

        Raises:
            pydantic.ValidationError: for a bad device id or command type.
        """
        issued_at = now or utcnow()
        command = Command(
            id=new_id(),
            type=command_type,
            issued_at=issued_at,
            expires_at=issued_at + (ttl or self.default_ttl),
            device_id=device_id,
            body=body or {},
        )
        return sign_command(self._signing_key, command)

    async def send(
        self,
        device_id: str,
        command_type: str,
        body: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
    ) -> PendingCommand:
        """Sign and publish a command (QoS 1); await its result with ``.result(timeout_s)``.

        Raises:
            NotFound: for an unknown device.
            DeviceRevoked: for a revoked device.
            BrokerUnavailable: when the broker did not take it.
        """
        await asyncio.to_thread(self._check_device, device_id)
        command = self.build(device_id, command_type, body, ttl=ttl)
        return await self.publish(command)

    async def publish(self, command: Command) -> PendingCommand:
        """Publish an already signed command and start waiting for its result.

        Raises:
            BrokerUnavailable: when the broker did not take it.
        """
        if command.device_id is None:
            msg = "a command must name its device"
            raise ValueError(msg)
        self._forget_expired()
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command.id] = (command.device_id, command.expires_at, future)
        try:
            await self.wait_connected()
            client = self._client
            if client is None:
                msg = "the command publisher lost the broker"
                raise BrokerUnavailable(msg)
            await client.publish(
                topics.cmd(command.device_id),
                dump_message(command),
                qos=1,
                timeout=PUBLISH_TIMEOUT_S,
            )
        except aiomqtt.MqttError as exc:
            self._pending.pop(command.id, None)
            msg = f"the broker did not take command {command.id}: {exc}"
            raise BrokerUnavailable(msg) from exc
        except BaseException:
            self._pending.pop(command.id, None)
            raise
        logger.info("sent %s %s to %s", command.type, command.id, command.device_id)
        return PendingCommand(command, future, self._forget)

    async def execute(
        self,
        device_id: str,
        command_type: str,
        body: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
        timeout_s: float = DEFAULT_RESULT_TIMEOUT_S,
    ) -> CommandResult:
        """Send a command and wait for its result (``ok`` false when refused or failed).

        Raises:
            NotFound, DeviceRevoked, BrokerUnavailable: as :meth:`send`.
            CommandTimeout: when no result came within ``timeout_s``.
        """
        pending = await self.send(device_id, command_type, body, ttl=ttl)
        return await pending.result(timeout_s)

    # -- results -----------------------------------------------------------------------

    def deliver_result(self, device_id: str, result: CommandResult) -> None:
        """Hand a device's result to whoever awaits it (the ingest's ``on_command_result``).

        Results of unknown commands, and results claimed by another device than
        the command's, are ignored.
        """
        entry = self._pending.get(result.id)
        if entry is None:
            logger.debug("result for an unknown command %s from %s", result.id, device_id)
            return
        expected_device, _expires_at, future = entry
        if device_id != expected_device:
            logger.warning(
                "result for command %s came from %s, not %s; ignored",
                result.id,
                device_id,
                expected_device,
            )
            return
        if not future.done():
            future.set_result(result)
        if not result.ok:
            logger.info("command %s on %s failed: %s", result.id, device_id, result.error)

    def _forget(self, command_id: str) -> None:
        self._pending.pop(command_id, None)

    def _forget_expired(self) -> None:
        cutoff = utcnow() - RESULT_GRACE
        for command_id, (_device, expires_at, _future) in list(self._pending.items()):
            if expires_at < cutoff:
                # Whoever still waits on it times out on its own.
                del self._pending[command_id]
