"""A small SNMPv2c agent for ``fieldlink demo``: printers for the demo's site gateway.

It serves ``.snmprec`` recordings (``OID|type|value`` lines, snmpsim's format) of
RFC 3805 Printer-MIB printers on one loopback UDP port, one recording per community
(``colour.snmprec`` -> community ``colour``), answering GET, GETNEXT and GETBULK.
Read-only, loopback only, v2c only: a stand-in for the printers on a customer's LAN,
so that ``make demo`` shows a gateway watching real SNMP (the tests use snmpsim).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905

logger = logging.getLogger(__name__)

OID = tuple[int, ...]
#: The recordings shipped for the demo (``server/demo_printers/*.snmprec``).
PRINTERS: Final = ("colour", "mono")
#: The most rows one GETBULK answer carries.
MAX_REPETITIONS: Final = 64

_TYPES: Final[Mapping[str, Any]] = {
    "2": rfc1902.Integer32,
    "4": rfc1902.OctetString,
    "6": rfc1902.ObjectIdentifier,
    "64": rfc1902.IpAddress,
    "65": rfc1902.Counter32,
    "66": rfc1902.Gauge32,
    "67": rfc1902.TimeTicks,
    "70": rfc1902.Counter64,
}


def _oid(text: str) -> OID:
    return tuple(int(part) for part in text.strip().strip(".").split("."))


def parse_recording(text: str) -> dict[OID, Any]:
    """The values of a ``.snmprec`` recording, by OID (``4x``: hex-encoded octets)."""
    values: dict[OID, Any] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        oid, kind, value = line.split("|", 2)
        if kind == "4x":
            values[_oid(oid)] = rfc1902.OctetString(hexValue=value)
        elif kind == "6":
            values[_oid(oid)] = rfc1902.ObjectIdentifier(_oid(value))
        elif kind in ("4", "64"):
            values[_oid(oid)] = _TYPES[kind](value)
        else:
            values[_oid(oid)] = _TYPES[kind](int(value))
    return values


def demo_recordings() -> dict[str, dict[OID, Any]]:
    """The demo's printers by community."""
    folder = resources.files("server") / "demo_printers"
    return {
        name: parse_recording((folder / f"{name}.snmprec").read_text(encoding="utf-8"))
        for name in PRINTERS
    }


class _Table:
    def __init__(self, values: Mapping[OID, Any]) -> None:
        self.values = dict(values)
        self.oids = sorted(values)

    def get(self, oid: OID) -> Any:
        return self.values.get(oid, rfc1905.noSuchInstance)

    def next(self, oid: OID) -> tuple[OID, Any]:
        index = bisect.bisect_right(self.oids, oid)
        if index >= len(self.oids):
            return oid, rfc1905.endOfMibView
        found = self.oids[index]
        return found, self.values[found]


class SnmpResponder(asyncio.DatagramProtocol):
    """Answers SNMPv2c requests from the recordings (community -> OID values)."""

    def __init__(self, recordings: Mapping[str, Mapping[OID, Any]]) -> None:
        self.tables = {community: _Table(values) for community, values in recordings.items()}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            answer = self.answer(data)
        except Exception as exc:  # a malformed datagram: no answer, as an agent would
            logger.debug("demo SNMP agent: dropped a request: %r", exc)
            return
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    def answer(self, data: bytes) -> bytes | None:
        """The response to one request, or ``None`` (not v2c, unknown community)."""
        if int(api.decodeMessageVersion(data)) != api.SNMP_VERSION_2C:
            return None
        module = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        message, _rest = decoder.decode(data, asn1Spec=module.Message())
        table = self.tables.get(str(module.apiMessage.get_community(message)))
        if table is None:
            return None
        request = module.apiMessage.get_pdu(message)
        response_message = module.apiMessage.get_response(message)
        response = module.apiMessage.get_pdu(response_message)
        asked = [(tuple(oid), value) for oid, value in module.apiPDU.get_varbinds(request)]
        varbinds: list[tuple[Any, Any]] = []
        if request.isSameTypeWith(module.GetRequestPDU()):
            varbinds = [(oid, table.get(oid)) for oid, _ in asked]
        elif request.isSameTypeWith(module.GetNextRequestPDU()):
            varbinds = [table.next(oid) for oid, _ in asked]
        elif request.isSameTypeWith(module.GetBulkRequestPDU()):
            varbinds = self._bulk(module, request, table, [oid for oid, _ in asked])
        else:
            module.apiPDU.set_error_status(response, 17)  # notWritable: a read-only agent
            module.apiPDU.set_varbinds(response, asked)
            return bytes(encoder.encode(response_message))
        module.apiPDU.set_varbinds(response, varbinds)
        return bytes(encoder.encode(response_message))

    @staticmethod
    def _bulk(module: Any, request: Any, table: _Table, oids: list[OID]) -> list[tuple[Any, Any]]:
        non_repeaters = max(0, min(int(module.apiBulkPDU.get_non_repeaters(request)), len(oids)))
        repetitions = max(
            0, min(int(module.apiBulkPDU.get_max_repetitions(request)), MAX_REPETITIONS)
        )
        varbinds = [table.next(oid) for oid in oids[:non_repeaters]]
        cursors = oids[non_repeaters:]
        for _ in range(repetitions):
            if not cursors:
                break
            row = [table.next(oid) for oid in cursors]
            varbinds += row
            if all(value is rfc1905.endOfMibView for _, value in row):
                break
            cursors = [oid for oid, _ in row]
        return varbinds


async def serve(
    recordings: Mapping[str, Mapping[OID, Any]], host: str = "127.0.0.1", port: int = 0
) -> tuple[asyncio.DatagramTransport, int]:
    """Serve the recordings on ``host:port`` (0: any free port); the transport and the port."""
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_datagram_endpoint(
        lambda: SnmpResponder(recordings), local_addr=(host, port)
    )
    return transport, int(transport.get_extra_info("sockname")[1])
