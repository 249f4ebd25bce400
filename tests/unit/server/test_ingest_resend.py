"""Asking devices to resend what the ingest counted missing: when, and when not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from server.ingest.resend import RESEND_TTL, GapResender, resend_via
from shared.wire import TELEMETRY_RESEND


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_gap_asks_the_device_once_per_interval() -> None:
    asked: list[str] = []

    async def send(device_id: str) -> None:
        asked.append(device_id)

    clock = Clock()
    resender = GapResender(send, min_interval_s=60, clock=clock)
    resender.on_gap("mfp-1", 3)
    resender.on_gap("mfp-1", 4)
    resender.on_gap("mfp-2", 1)
    await _settle()
    assert asked == ["mfp-1", "mfp-2"]
    clock.now = 61
    resender.on_gap("mfp-1", 2)
    await _settle()
    assert asked == ["mfp-1", "mfp-2", "mfp-1"]


async def test_requests_that_change_nothing_stop_until_the_count_moves() -> None:
    asked: list[str] = []

    async def send(device_id: str) -> None:
        asked.append(device_id)

    clock = Clock()
    resender = GapResender(send, min_interval_s=1, max_futile=2, clock=clock)
    for step in range(10):
        clock.now = step * 2
        resender.on_gap("mfp-1", 5)  # an outbox overflow: no resend can fill it
    await _settle()
    assert len(asked) == 2
    clock.now = 100
    resender.on_gap("mfp-1", 6)  # a new gap: worth asking again
    await _settle()
    assert len(asked) == 3


async def test_nothing_missing_forgets_the_device_and_a_failed_send_is_only_logged() -> None:
    async def send(_device_id: str) -> None:
        raise RuntimeError("broker away")

    clock = Clock()
    resender = GapResender(send, min_interval_s=60, clock=clock)
    resender.on_gap("mfp-1", 2)
    await _settle()
    resender.on_gap("mfp-1", 0)
    resender.on_gap("mfp-1", 1)  # asked again at once: the old gap was filled
    await _settle()
    await resender.stop()


async def test_the_request_is_a_short_lived_telemetry_resend_command() -> None:
    sent: list[tuple[str, str, Any, timedelta | None]] = []

    class Commands:
        async def send(
            self,
            device_id: str,
            command_type: str,
            body: dict[str, Any] | None = None,
            *,
            ttl: timedelta | None = None,
        ) -> object:
            sent.append((device_id, command_type, body, ttl))
            return None

    await resend_via(Commands())("mfp-1")
    assert sent == [("mfp-1", TELEMETRY_RESEND, None, RESEND_TTL)]


async def test_a_watched_devices_request_goes_to_its_gateway_naming_the_device() -> None:
    sent: list[tuple[str, str, Any, timedelta | None]] = []

    class Commands:
        async def send(
            self,
            device_id: str,
            command_type: str,
            body: dict[str, Any] | None = None,
            *,
            ttl: timedelta | None = None,
        ) -> object:
            sent.append((device_id, command_type, body, ttl))
            return None

    via = {"mfp-colour": "gw-a"}
    send = resend_via(Commands(), via.get)
    await send("mfp-colour")
    await send("mfp-1")
    assert sent == [
        ("gw-a", TELEMETRY_RESEND, {"device": "mfp-colour"}, RESEND_TTL),
        ("mfp-1", TELEMETRY_RESEND, None, RESEND_TTL),
    ]
