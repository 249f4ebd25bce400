"""An MFP's health over SNMP: RFC 3805 Printer-MIB and RFC 2790 Host Resources MIB.

One :class:`PrinterMibCollector` watches one device (:class:`SnmpTarget`): the
agent running on the MFP's own controller (``[agent.snmp]``, host 127.0.0.1),
or a site gateway running one instance per watched printer. ``collect()`` walks
the tables with GETBULK (SNMPv2c or SNMPv3 authPriv), by numeric OID: no MIB is
compiled or loaded at run time. pysnmp is imported on the first poll only, so an
agent with no SNMP target never loads it. ``collect()`` never raises for a bad
device: a device that does not answer, refuses the credentials or answers
nonsense gives ``reachable=False`` and a one-line ``reason``; every poll is
bounded by ``target.budget_s``.

The device and its credentials are :class:`~agent.health.collectors.snmp_target.SnmpTarget`;
the OIDs read are in :mod:`agent.health.collectors.printer_mib`; the metrics, faults and
inventory a poll gives (:func:`~agent.health.collectors.printer_reading.interpret`) are
described in :mod:`agent.health.collectors.printer_reading`; SNMP itself (credentials,
GET and GETBULK by numeric OID, walking and batching columns, pysnmp's values and errors)
in :mod:`agent.health.collectors.snmp_walk`. This module is the polling: the engine, what
each poll reads, and the device's reachability.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

from agent.health.collectors.printer_mib import (
    COLUMN_GROUPS,
    ROWS_OF,
    STATIC_GROUPS,
    SYS_DESCR,
    SYS_NAME,
)
from agent.health.collectors.printer_reading import ProfileReading, interpret
from agent.health.collectors.snmp_target import TARGET_KEYS, SnmpTarget
from agent.health.collectors.snmp_walk import (
    Column,
    Oid,
    Row,
    SnmpUnreachable,
    batches,
    bulk,
    credentials,
    get,
    walk_columns,
)

__all__ = [
    "COLUMN_GROUPS",
    "SYS_DESCR",
    "SYS_NAME",
    "TARGET_KEYS",
    "PrinterMibCollector",
    "ProfileReading",
    "SnmpTarget",
    "SnmpUnreachable",
    "interpret",
    "new_engine",
]

logger = logging.getLogger(__name__)

#: The identity (group "identity" and sysDescr/sysName) and the static columns (group
#: "static": supply types, capacities, colorants, tray capacities) are read at the first
#: poll, after the device was unreachable, and then every IDENTITY_EVERY polls (hourly at
#: 60 s); the static columns also when a table's rows change (printer_mib.ROWS_OF).
IDENTITY_EVERY: Final = 60
IDENTITY_KEYS: Final = ("sys_descr", "sys_name", "hr_type", "hr_descr", "firmware", "software")


def new_engine() -> Any:
    """An SNMP engine (``pysnmp`` ``SnmpEngine``) to share between collectors.

    Imports pysnmp. The caller closes it with ``engine.close_dispatcher()``.
    """
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    return SnmpEngine()


class PrinterMibCollector:
    """Polls one printer's Printer-MIB and Host Resources MIB (see the module docstring).

    Args:
        target: The device and its credentials.
        name: The name it is logged under (``mfp``, or the watched device's id).
        engine: An SNMP engine shared with other collectors (:func:`new_engine`); a
            gateway watching many printers shares one (pysnmp costs about 20 MiB
            once, and each engine about 5 MiB more). Share one between SNMPv2c
            targets, or SNMPv3 targets whose user names differ: an engine holds
            one set of keys per user name. ``None``: this collector makes its
            own at the first poll and closes it in :meth:`close`.
    """

    def __init__(self, target: SnmpTarget, name: str = "mfp", engine: Any = None) -> None:
        self.name = name
        self.target = target
        self._owns_engine = engine is None
        self._engine: Any = engine
        self._transport: Any = None
        self._lock = asyncio.Lock()
        self._was_reachable: bool | None = None
        self._identity: dict[str, Any] | None = None
        #: The static columns as last read, (key, column, rows), and the indexes of each
        #: table's every-poll column (ROWS_OF) at that read.
        self._static: list[tuple[Column, Row]] | None = None
        self._static_rows: dict[str, frozenset[tuple[int, ...]]] = {}
        #: Times the static columns were read (by the identity or a change of rows).
        self.static_reads = 0
        self._polls = 0
        #: Rows each column (by OID) had at the last poll: its next GETBULK's max-repetitions.
        self._rows: dict[tuple[int, ...], int] = {}

    async def collect(self) -> ProfileReading:
        """Poll the device once, bounded by ``target.budget_s``; never raises for a bad device."""
        started = time.monotonic()
        async with self._lock:
            try:
                async with asyncio.timeout(self.target.budget_s):
                    tables = await self._read()
            except TimeoutError:
                reason = f"no complete answer within {self.target.budget_s:g} s"
                return self._unreachable(reason)
            except SnmpUnreachable as exc:
                return self._unreachable(str(exc))
            except Exception as exc:
                logger.warning("snmp %s: unexpected failure: %s", self.name, type(exc).__name__)
                return self._unreachable(f"unexpected failure: {type(exc).__name__}")
        reading = interpret(tables, expected_serial=self.target.expected_serial)
        if self._was_reachable is False:
            logger.info("snmp %s: %s answers again", self.name, self.target.host)
        self._was_reachable = True
        logger.debug("snmp %s: polled in %.3f s", self.name, time.monotonic() - started)
        return reading

    def close(self) -> None:
        """Release this collector's engine and socket (not a shared engine); reopened on use."""
        self._transport = None
        if self._owns_engine and self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close_dispatcher()

    async def __aenter__(self) -> PrinterMibCollector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _unreachable(self, reason: str) -> ProfileReading:
        # A fresh address lookup next time, and a fresh socket if the engine is ours: an
        # ICMP "port unreachable" is reported on the socket's next send, costing one request.
        self.close()
        self._identity = None  # it may be another printer when it answers again
        self._static = None
        self._rows.clear()
        # Once per outage, not at every poll; never with the credentials.
        if self._was_reachable is not False:
            logger.warning(
                "snmp %s: %s:%d unreachable: %s",
                self.name,
                self.target.host,
                self.target.port,
                reason,
            )
        self._was_reachable = False
        return ProfileReading(reachable=False, reason=reason)

    async def _setup(self) -> None:
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine, UdpTransportTarget

        if self._engine is None:
            self._engine = SnmpEngine()
        if self._transport is None:
            try:
                self._transport = await UdpTransportTarget.create(
                    (self.target.host, self.target.port),
                    timeout=self.target.timeout_s,
                    retries=self.target.retries,
                )
            except Exception as exc:  # pysnmp wraps name resolution errors in its own
                msg = f"cannot resolve {self.target.host}"
                raise SnmpUnreachable(msg) from exc

    def _auth(self) -> tuple[Any, Any]:
        return credentials(self.target)

    async def _read(self) -> dict[str, Any]:
        await self._setup()
        auth, context = self._auth()
        identity = (
            self._identity is None or self._static is None or self._polls % IDENTITY_EVERY == 0
        )
        columns = [
            column
            for group, members in COLUMN_GROUPS
            if identity or group not in STATIC_GROUPS
            for column in members
        ]
        tables: dict[str, Any] = {} if identity else dict(self._identity or {})
        found = await self._read_columns(auth, context, columns, tables, scalars=identity)
        statics = [
            column for group, members in COLUMN_GROUPS if group == "static" for column in members
        ]
        rows_now = _table_rows(tables)
        if not identity and rows_now != self._static_rows:
            # A supply or tray fitted or removed: its type, capacity and colorant now.
            found = await self._read_columns(auth, context, statics, tables, scalars=False)
            identity = True
        elif not identity:
            for (key, col, _oid), rows in self._static or []:
                _put(tables, key, col, rows)
        if identity:
            self._static = [(column, found[column]) for column in statics]
            self._static_rows = rows_now
            self.static_reads += 1
            self._identity = {key: tables.get(key) for key in IDENTITY_KEYS}
        self._polls += 1
        return tables

    async def _read_columns(
        self,
        auth: Any,
        context: Any,
        columns: list[Column],
        tables: dict[str, Any],
        *,
        scalars: bool,
    ) -> dict[Column, Row]:
        """Read ``columns`` (and sysDescr/sysName if ``scalars``) into ``tables``.

        Batches of columns in one GETBULK each, the batches at once (see
        :func:`~agent.health.collectors.snmp_walk.batches`). Returns each column's rows.
        """
        ordered = batches(columns, self._rows)
        asked: list[tuple[int, ...]] = [SYS_DESCR[:-1], SYS_NAME[:-1]] if scalars else []
        results = await asyncio.gather(
            *(
                self._walk_columns(
                    auth,
                    context,
                    asked if number == 0 else [],
                    [oid for _key, _col, oid in batch],
                    [self._rows.get(oid) for _key, _col, oid in batch],
                )
                for number, batch in enumerate(ordered)
            )
        )
        found: dict[Column, Row] = {}
        if scalars:
            first = results[0][0] if results else {}
            tables["sys_descr"] = first.get(SYS_DESCR)
            tables["sys_name"] = first.get(SYS_NAME)
        for batch, (_found_scalars, found_rows) in zip(ordered, results, strict=True):
            for column, rows in zip(batch, found_rows, strict=True):
                self._rows[column[2]] = len(rows)
                found[column] = rows
                _put(tables, column[0], column[1], rows)
        return found

    async def _get(self, auth: Any, context: Any, oids: list[tuple[int, ...]]) -> Row:
        return await get(self._engine, auth, self._transport, context, oids)

    async def _bulk(
        self, auth: Any, context: Any, non_repeaters: int, repetitions: int, oids: list[Oid]
    ) -> tuple[Any, Any, Any]:
        """One GETBULK (:func:`~agent.health.collectors.snmp_walk.bulk`) to this device."""
        return await bulk(
            self._engine, auth, self._transport, context, non_repeaters, repetitions, oids
        )

    async def _walk_columns(
        self,
        auth: Any,
        context: Any,
        scalars: list[tuple[int, ...]],
        prefixes: list[tuple[int, ...]],
        expected: list[int | None] | None = None,
    ) -> tuple[Row, list[Row]]:
        """:func:`~agent.health.collectors.snmp_walk.walk_columns` with this device's GETBULK."""
        return await walk_columns(partial(self._bulk, auth, context), scalars, prefixes, expected)


def _put(tables: dict[str, Any], key: str, col: int | None, rows: Row) -> None:
    if col is None:
        tables[key] = rows
    else:
        tables.setdefault(key, {})[col] = rows


def _table_rows(tables: Mapping[str, Any]) -> dict[str, frozenset[tuple[int, ...]]]:
    """The indexes of each table's every-poll column (ROWS_OF) in ``tables``."""
    return {key: frozenset((tables.get(key) or {}).get(col) or {}) for key, col in ROWS_OF.items()}
