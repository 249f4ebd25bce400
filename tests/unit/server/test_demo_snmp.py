"""The demo's SNMP agent: the real collector reads its printers; bad requests get nothing."""

from __future__ import annotations

import asyncio

import pytest

from agent.health.collectors.snmp import PrinterMibCollector, ProfileReading, SnmpTarget
from server.demo_snmp import SnmpResponder, demo_recordings, serve


async def _poll(community: str) -> ProfileReading:
    transport, port = await serve(demo_recordings())
    try:
        target = SnmpTarget(
            host="127.0.0.1", port=port, community=community, timeout_s=0.3, retries=0
        )
        async with PrinterMibCollector(target) as collector:
            return await collector.collect()
    finally:
        transport.close()


def test_the_collector_reads_the_demo_colour_printer() -> None:
    reading = asyncio.run(_poll("colour"))
    assert reading.reachable, reading.reason
    assert reading.metrics["mfp.toner_cyan_percent"] == 0.0
    assert {f["code"] for f in reading.faults} >= {"JAM", "TONER-OUT-CYAN"}
    assert reading.inventory["serial"] == "COLOR-0042"


def test_a_wrong_community_gets_no_answer() -> None:
    reading = asyncio.run(_poll("public"))
    assert not reading.reachable


@pytest.mark.parametrize("datagram", [b"", b"\x30\x03\x02\x01", b"not snmp at all"])
def test_malformed_requests_are_dropped(datagram: bytes) -> None:
    responder = SnmpResponder(demo_recordings())
    responder.datagram_received(datagram, ("127.0.0.1", 9))  # no transport: nothing sent
    with pytest.raises(Exception):  # noqa: B017, PT011  (pyasn1's errors vary)
        responder.answer(datagram)
