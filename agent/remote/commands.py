"""Signed commands on the device: verify, refuse and report, or dispatch to a handler by type.

The server publishes commands on the device's own ``fieldlink/v1/{id}/cmd``
topic, signed with its Ed25519 command key (:mod:`shared.signing`). The agent
verifies each one with the public key pinned at enrollment (``command_key_file``),
its own device id and a replay cache kept in ``state_dir`` (so a restart does
not reopen a replay window). Anything refused (forged, tampered with, replayed,
expired, foreign, unsigned, malformed, or any command at all when no key is
pinned: ``no_key``) is reported twice: as a ``command.refused`` device event
on ``.../events`` and, when its id can be read, as a failed result on
``.../cmd/result``. Neither report nor log carries the signature or the body.

An accepted command goes to the handler registered under its ``type`` in a
:class:`CommandRegistry`; an unknown type gets the result ``unsupported``.
Handlers answer with a result body, or raise :class:`CommandFailed` with a
short error label.

Memory: verification loads neither pydantic nor ``cryptography``:
:func:`shared.signing.verify_command` checks the command's shape with the
standard library, and the signature with the system's ``libcrypto`` that the
``ssl`` module has already mapped (:mod:`shared.openssl_ed25519`, about 1.3 MiB
for ctypes, on the first command). Where that library cannot be used it falls
back to cryptography's Ed25519 (about 7 MiB, also loaded on the first command
only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from shared import __version__ as AGENT_VERSION
from shared import topics
from shared.fields import InvalidField
from shared.ids import isoformat_z, utcnow
from shared.wire import (
    COMMAND_REFUSED,
    CONFIG_UPDATE,
    DIAGNOSTICS_COLLECT,
    MAX_COMMAND_ID_LENGTH,
    TELEMETRY_RESEND,
)

if TYPE_CHECKING:
    from agent.health.collectors.base import Reading
    from shared.signing import ReplayCache

logger = logging.getLogger(__name__)

#: Where the replay cache lives, under ``state_dir``.
REPLAY_CACHE_FILENAME: Final = "command-replay.json"
#: Refusal reason when no command key is pinned (or it cannot be read).
NO_KEY: Final = "no_key"
#: Result error of a command type nobody registered.
UNSUPPORTED: Final = "unsupported"
#: Result error of a handler that failed unexpectedly.
INTERNAL_ERROR: Final = "internal_error"
#: Result errors of a ``config.update`` that is refused.
INVALID: Final = "invalid"
NOT_ALLOWED: Final = "not_allowed"
OUT_OF_BOUNDS: Final = "out_of_bounds"
#: Bounds of ``interval_s`` a ``config.update`` may set.
MIN_INTERVAL_S: Final = 1.0
MAX_INTERVAL_S: Final = 3600.0


class CommandFailed(Exception):
    """Raised by a handler to fail a command with a short, stable error label.

    Args:
        error: The label sent as the result's ``error`` (``out_of_bounds``, ``not_allowed``...).
        body: Details for the result's body (never secrets).
    """

    def __init__(self, error: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.body = dict(body or {})


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A verified command as a handler sees it.

    Attributes:
        id: The command's id.
        type: Its type, e.g. ``diagnostics.collect``.
        body: Its arguments.
        issued_at: When the server issued it.
        expires_at: When it expires.
    """

    id: str
    type: str
    body: dict[str, Any]
    issued_at: datetime
    expires_at: datetime


CommandHandler = Callable[[CommandRequest], Awaitable[dict[str, Any]]]
_Body = TypeVar("_Body")


def parse_body(parse: Callable[[Mapping[str, Any]], _Body], body: Mapping[str, Any]) -> _Body:
    """Check a command body with ``parse``, or fail the command with ``invalid`` (the
    field that is wrong, never echoing input)."""
    try:
        return parse(body)
    except InvalidField as exc:
        raise CommandFailed(INVALID, {"detail": str(exc)}) from None


class CommandRegistry:
    """Command handlers registered explicitly by type name."""

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}

    def register(self, command_type: str, handler: CommandHandler) -> None:
        """Register ``handler`` for ``command_type`` (replacing any earlier one)."""
        self._handlers[command_type] = handler

    def get(self, command_type: str) -> CommandHandler | None:
        """The handler of ``command_type``, or ``None``."""
        return self._handlers.get(command_type)

    def types(self) -> list[str]:
        """The registered command types."""
        return sorted(self._handlers)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the agent publishes in answer to a command (QoS 1, not retained)."""

    topic: str
    payload: bytes


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).encode()


def device_event(device_id: str, event_type: str, body: Mapping[str, Any]) -> Outgoing:
    """A ``DeviceEvent`` for ``.../events``, written without pydantic.

    Args:
        device_id: The device.
        event_type: ``command.refused``, ``session.started``...
        body: The event's body (never secrets).
    """
    event = {
        "v": 1,
        "device_id": device_id,
        "ts": isoformat_z(utcnow()),
        "type": event_type,
        "body": dict(body),
    }
    return Outgoing(topics.events(device_id), _json(event))


# Pinned command keys by file: a simulated fleet's dispatchers share one loaded key.
_PUBLIC_KEYS: dict[Path, Any] = {}
_PUBLIC_KEYS_LOCK = threading.Lock()


def _pinned_public_key(path: Path) -> Any:
    from shared.keyfiles import read_pinned_key

    with _PUBLIC_KEYS_LOCK:
        key = _PUBLIC_KEYS.get(path)
        if key is None:
            key = _PUBLIC_KEYS[path] = read_pinned_key(path)
        return key


def _readable_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_COMMAND_ID_LENGTH and value.isprintable():
        return value
    return None


def _peek_id(payload: bytes) -> str | None:
    """The ``id`` of a payload we do not verify (no key), read without pydantic."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return _readable_id(data.get("id")) if isinstance(data, dict) else None


@dataclass(slots=True)
class CommandDispatcher:
    """Verifies one device's commands and runs the accepted ones.

    Args:
        device_id: The device; commands for any other are refused as ``foreign``.
        key_file: The pinned command public key; ``None`` refuses every command (``no_key``).
        replay_cache_path: Where accepted ids are persisted (``None``: memory only).
        registry: The handlers by command type.
        clock: The current time (tests).
    """

    device_id: str
    key_file: Path | None
    replay_cache_path: Path | None
    registry: CommandRegistry
    clock: Callable[[], datetime] = utcnow
    _replay_cache: ReplayCache | None = field(default=None, init=False, repr=False)
    _public_key: Any = field(default=None, init=False, repr=False)
    # One replay cache per device, even when two first commands arrive together.
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _verify_sync(self, payload: bytes) -> CommandRequest:
        # Runs in a worker thread: the first call loads the Ed25519 check,
        # and an accepted id is written to disk.
        from shared.signing import ReplayCache, verify_command

        assert self.key_file is not None  # noqa: S101 - checked by the caller
        with self._load_lock:
            if self._public_key is None:
                self._public_key = _pinned_public_key(self.key_file)
            if self._replay_cache is None:
                self._replay_cache = ReplayCache(self.replay_cache_path)
        command = verify_command(
            self._public_key, payload, self.device_id, self._replay_cache, self.clock()
        )
        return CommandRequest(
            id=command.id,
            type=command.type,
            body=dict(command.body),
            issued_at=command.issued_at,
            expires_at=command.expires_at,
        )

    async def handle(self, payload: bytes) -> list[Outgoing]:
        """Verify and run one command as received; the messages to publish in answer.

        Never raises for a bad command: a refusal is answered with a
        ``command.refused`` event and (when the id is readable) a failed result.
        """
        from shared.signing import CommandRejected, KeyFileError

        if self.key_file is None:
            return self._refused(NO_KEY, _peek_id(payload), "no command key is pinned")
        try:
            request = await asyncio.to_thread(self._verify_sync, payload)
        except CommandRejected as exc:
            return self._refused(exc.reason, _readable_id(exc.command_id), exc.reason)
        except KeyFileError as exc:
            logger.error("cannot load the pinned command key: %s", exc)
            return self._refused(NO_KEY, _peek_id(payload), "the command key cannot be read")
        return [await self._run(request)]

    async def _run(self, request: CommandRequest) -> Outgoing:
        handler = self.registry.get(request.type)
        if handler is None:
            logger.warning("command %s: unsupported type %s", request.id, request.type)
            return self.result(request.id, ok=False, error=UNSUPPORTED)
        logger.info("command %s: running %s", request.id, request.type)
        try:
            body = await handler(request)
        except CommandFailed as exc:
            logger.warning("command %s (%s) failed: %s", request.id, request.type, exc.error)
            return self.result(request.id, ok=False, error=exc.error, body=exc.body)
        except Exception:
            logger.exception("command %s (%s): the handler failed", request.id, request.type)
            return self.result(request.id, ok=False, error=INTERNAL_ERROR)
        return self.result(request.id, ok=True, body=body)

    def _refused(self, reason: str, command_id: str | None, why: str) -> list[Outgoing]:
        logger.warning("refused command %s: %s", command_id or "(no readable id)", why)
        answers = [
            device_event(self.device_id, COMMAND_REFUSED, {"id": command_id, "reason": reason})
        ]
        if command_id is not None:
            answers.append(self.result(command_id, ok=False, error=reason))
        return answers

    def result(
        self,
        command_id: str,
        *,
        ok: bool,
        error: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Outgoing:
        """A ``CommandResult`` for ``.../cmd/result``, written without pydantic."""
        result: dict[str, Any] = {"v": 1, "id": command_id, "ok": ok, "ts": isoformat_z(utcnow())}
        if error is not None:
            result["error"] = error
        result["body"] = dict(body or {})
        return Outgoing(topics.cmd_result(self.device_id), _json(result))


# --- the handlers the agent ships -------------------------------------------------------


class AgentControl(Protocol):
    """What the shipped handlers need of the running agent (:class:`agent.supervisor.Agent`)."""

    device_id: str

    @property
    def boot_id(self) -> str:
        """This run's id."""
        ...

    @property
    def interval_s(self) -> float:
        """Seconds between health samples."""
        ...

    def set_interval(self, interval_s: float) -> None:
        """Sample every ``interval_s`` seconds from now on."""
        ...

    async def collect(self) -> Reading:
        """Observe once with every collector (not stored in the outbox)."""
        ...

    async def outbox_depth(self) -> int:
        """Samples waiting in the outbox for the broker."""
        ...

    def request_resend(self) -> None:
        """Re-publish the samples sent on this connection still in the resend window."""
        ...

    def request_via_resend(self, device_id: str) -> bool:
        """Re-publish a watched device's samples (a site gateway); whether it watches it."""
        ...


def diagnostics_handler(agent: AgentControl) -> CommandHandler:
    """``diagnostics.collect``: a fresh sample's metrics and faults, and the agent's own state."""

    async def collect_diagnostics(_request: CommandRequest) -> dict[str, Any]:
        from agent.health.collectors.base import status_of

        reading = await agent.collect()
        return {
            "ts": isoformat_z(utcnow()),
            "status": status_of(reading.faults),
            "metrics": reading.metrics,
            "faults": reading.faults,
            "agent_version": AGENT_VERSION,
            "boot_id": agent.boot_id,
            "outbox_depth": await agent.outbox_depth(),
            "interval_s": agent.interval_s,
        }

    return collect_diagnostics


#: Settings a ``config.update`` may change at run time, with their bounds.
UPDATABLE_SETTINGS: Final = {"interval_s": (MIN_INTERVAL_S, MAX_INTERVAL_S)}


def config_update_handler(agent: AgentControl) -> CommandHandler:
    """``config.update``: change ``interval_s`` within safe bounds; refuse anything else.

    The change lasts until the agent restarts (``agent.toml`` is not rewritten).
    """

    async def update_config(request: CommandRequest) -> dict[str, Any]:
        changes = request.body
        if not changes:
            raise CommandFailed(INVALID, {"detail": "no setting to change"})
        refused = sorted(key for key in changes if key not in UPDATABLE_SETTINGS)
        if refused:
            raise CommandFailed(
                NOT_ALLOWED, {"keys": refused, "allowed": sorted(UPDATABLE_SETTINGS)}
            )
        value = changes["interval_s"]
        low, high = UPDATABLE_SETTINGS["interval_s"]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value):
            raise CommandFailed(INVALID, {"key": "interval_s", "detail": "must be a number"})
        if not low <= value <= high:
            raise CommandFailed(OUT_OF_BOUNDS, {"key": "interval_s", "min": low, "max": high})
        previous = agent.interval_s
        agent.set_interval(float(value))
        logger.info("interval_s changed from %.1f to %.1f s by command", previous, float(value))
        return {"interval_s": float(value), "previous": {"interval_s": previous}}

    return update_config


def telemetry_resend_handler(agent: AgentControl) -> CommandHandler:
    """``telemetry.resend``: the server saw a gap in this device's ``seq``.

    The broker acknowledged those samples, so the agent cannot tell that they
    never reached the server (a subscriber that took a share and dropped it, a
    broker restart): it re-publishes what it sent on this connection that is still
    in its resend window, as after a server's announcement. The server stores each
    ``(boot_id, seq)`` once, so the copies of samples it had cost nothing.

    With ``{"device": ID}`` in its body, the gap is in a device this agent watches
    as a site gateway: the gateway re-publishes its watched devices' samples the
    same way (:meth:`agent.health.gateway.SiteGateway.request_resend`). A device
    it does not watch is refused (``not_allowed``).
    """

    async def resend(request: CommandRequest) -> dict[str, Any]:
        device = request.body.get("device")
        if device is None:
            agent.request_resend()
            return {"boot_id": agent.boot_id}
        if not isinstance(device, str):
            raise CommandFailed(INVALID, {"key": "device", "detail": "must be a device id"})
        # A gateway re-publishes only for the devices it watches.
        if not agent.request_via_resend(device):
            logger.warning(
                "telemetry.resend refused: %s is not a device this agent watches", device
            )
            raise CommandFailed(NOT_ALLOWED, {"device": device})
        return {"device": device}

    return resend


def default_registry(agent: AgentControl) -> CommandRegistry:
    """The handlers the agent ships: ``diagnostics.collect``, ``config.update``,
    ``telemetry.resend``.

    ``session.open`` and ``session.close`` are registered by the sessions code
    (:meth:`agent.remote.sessions.SessionController.register`).
    """
    registry = CommandRegistry()
    registry.register(DIAGNOSTICS_COLLECT, diagnostics_handler(agent))
    registry.register(CONFIG_UPDATE, config_update_handler(agent))
    registry.register(TELEMETRY_RESEND, telemetry_resend_handler(agent))
    return registry
