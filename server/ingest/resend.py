"""Asking a device to send again what the server never got.

A QoS 1 PUBACK proves only that the broker took a sample, not that the server
stored it: a subscriber that joined the server's shared subscription and
dropped its share, or a broker restart before the server resubscribed, loses
samples the agent believes delivered. The agent keeps what it sent for a resend
window (``resend_window_s``, ``resend_max_samples``) and re-publishes it when
the server announces itself; when the ingest sees a new gap in one device's
``seq`` (the device's ``telemetry_missing`` is above 0 after a batch of its
samples), :class:`GapResender` sends that device a signed ``telemetry.resend``
command, which does the same for that device alone. A device watched through a
site gateway (``devices.via``) has no agent of its own: the command goes to its
gateway with ``{"device": ID}``, and the gateway re-publishes on its via topics
(only for a device it watches). What arrives twice is a
duplicate the database drops; what fills the gap is counted ``late`` and taken
off ``telemetry_missing``.

Requests are rate-limited per device and stop when they change nothing (a
device whose outbox overflowed has gaps no resend can fill); a failure to send
is only logged: this is a best-effort repair, never a reason to stop ingesting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol

from server import metrics
from shared.wire import TELEMETRY_RESEND

logger = logging.getLogger(__name__)

#: At most one resend request per device in this many seconds.
DEFAULT_MIN_INTERVAL_S: Final = 60.0
#: Requests in a row that changed nothing before a device is left alone.
DEFAULT_MAX_FUTILE: Final = 3
#: Devices remembered at most; the oldest are forgotten first.
MAX_TRACKED_DEVICES: Final = 100_000
#: A resend request is void after this (the agent's window moves on anyway).
RESEND_TTL: Final = timedelta(minutes=2)


class CommandSender(Protocol):
    """What sends a signed command (:class:`server.commands.CommandPublisher`)."""

    async def send(
        self,
        device_id: str,
        command_type: str,
        body: dict[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
    ) -> object:
        """Sign and publish one command."""
        ...


def resend_via(
    commands: CommandSender, gateway_of: Callable[[str], str | None] | None = None
) -> Callable[[str], Awaitable[object]]:
    """A ``send`` for :class:`GapResender` that publishes ``telemetry.resend`` commands.

    Args:
        commands: Signs and publishes the commands.
        gateway_of: The site gateway that watches a device (``devices.via``), or
            ``None`` for a device with an agent of its own; run off the event loop.
            A watched device's request goes to its gateway, with ``{"device": ID}``.
    """

    async def send(device_id: str) -> object:
        gateway = await asyncio.to_thread(gateway_of, device_id) if gateway_of else None
        if gateway is None:
            return await commands.send(device_id, TELEMETRY_RESEND, ttl=RESEND_TTL)
        return await commands.send(gateway, TELEMETRY_RESEND, {"device": device_id}, ttl=RESEND_TTL)

    return send


@dataclass
class _Asked:
    at: float
    missing: int
    futile: int = 0


class GapResender:
    """Sends ``telemetry.resend`` to devices that have samples counted missing.

    A device is asked at most once per ``min_interval_s``. When its missing count
    has neither dropped (a resend filled something) nor grown (a new gap) since it
    was last asked ``max_futile`` times, it is left alone until it changes: its
    gap is older than its resend window, or its outbox dropped those samples.

    Args:
        send: Sends the command to one device (signs and publishes it).
        min_interval_s: The least time between two requests to one device.
        max_futile: Requests in a row that changed nothing, before giving up.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[object]],
        *,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        max_futile: int = DEFAULT_MAX_FUTILE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.min_interval_s = min_interval_s
        self.max_futile = max_futile
        self._clock = clock
        self._asked: dict[str, _Asked] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_gap(self, device_id: str, missing: int) -> None:
        """The ingest's hook (on the event loop): ask the device, unless that is pointless."""
        if missing <= 0:
            self._asked.pop(device_id, None)
            return
        now = self._clock()
        asked = self._asked.get(device_id)
        if asked is not None:
            if now - asked.at < self.min_interval_s:
                return
            futile = asked.futile + 1 if missing == asked.missing else 0
            if futile >= self.max_futile:
                asked.futile = futile
                return
            del self._asked[device_id]
            asked = _Asked(now, missing, futile)
        else:
            asked = _Asked(now, missing)
        self._asked[device_id] = asked
        while len(self._asked) > MAX_TRACKED_DEVICES:
            del self._asked[next(iter(self._asked))]
        task = asyncio.get_running_loop().create_task(self._request(device_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, device_id: str) -> None:
        try:
            await self._send(device_id)
        except Exception as exc:
            logger.info("could not ask %s to resend its telemetry: %s", device_id, exc)
            return
        metrics.TELEMETRY_RESEND_REQUESTS.inc()

    async def stop(self) -> None:
        """Cancel the requests under way."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
