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
described in :mod:`agent.health.collectors.printer_reading`. This module is the polling:
the engine, the GETBULK walking and batching, and pysnmp's values and errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
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
#: Values one GETBULK answer should hold about (max-repetitions x unfinished columns).
BULK_VALUES: Final = 64
MAX_REPETITIONS: Final = 25
#: What one more GETBULK costs, counted in values decoded (measured here: pysnmp spends
#: about as much on a message's own work as on decoding 8 values).
MESSAGE_VALUES: Final = 8
#: GETBULKs of one poll at most (a table of MAX_ROWS rows takes about 2 000 / 64 x columns).
MAX_REQUESTS: Final = 400
TOO_BIG: Final = 1
#: Rows read from one table at most: a broken agent looping on its table cannot exhaust us.
MAX_ROWS: Final = 2_000


def new_engine() -> Any:
    """An SNMP engine (``pysnmp`` ``SnmpEngine``) to share between collectors.

    Imports pysnmp. The caller closes it with ``engine.close_dispatcher()``.
    """
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    return SnmpEngine()


class SnmpUnreachable(Exception):
    """The device gave no usable answer (timeout, credentials, transport)."""


Row = dict[tuple[int, ...], Any]


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
        from pysnmp.hlapi.v3arch.asyncio import (
            USM_AUTH_HMAC96_SHA,
            USM_AUTH_HMAC192_SHA256,
            USM_AUTH_HMAC384_SHA512,
            USM_PRIV_CFB128_AES,
            USM_PRIV_CFB256_AES,
            CommunityData,
            ContextData,
            UsmUserData,
        )

        t = self.target
        if t.version == "3" and _no_ciphers():
            msg = "SNMPv3 privacy needs the cryptography package, 47 or later"
            raise SnmpUnreachable(msg)
        if t.version == "2c":
            # S508: v2c is what most installed printers speak; SNMPv3 authPriv is offered.
            return CommunityData(t.community, mpModel=1), ContextData()  # noqa: S508
        auth = {
            "sha": USM_AUTH_HMAC96_SHA,
            "sha256": USM_AUTH_HMAC192_SHA256,
            "sha512": USM_AUTH_HMAC384_SHA512,
        }[t.auth_protocol]
        priv = {"aes": USM_PRIV_CFB128_AES, "aes256": USM_PRIV_CFB256_AES}[t.priv_protocol]
        user = UsmUserData(t.user, t.auth_key, t.priv_key, authProtocol=auth, privProtocol=priv)
        return user, ContextData(contextName=t.context.encode())

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

        Batches of columns in one GETBULK each, the batches at once (see _batches).
        Returns each column's rows.
        """
        ordered = _batches(columns, self._rows)
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
        from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, get_cmd

        result = await get_cmd(
            self._engine,
            auth,
            self._transport,
            context,
            *(ObjectType(ObjectIdentity(oid)) for oid in oids),
            lookupMib=False,
        )
        indication, status, _index, var_binds = result
        _check(indication, status)
        return {tuple(oid): _value(value) for oid, value in var_binds if _value(value) is not None}

    async def _bulk(
        self,
        auth: Any,
        context: Any,
        non_repeaters: int,
        repetitions: int,
        oids: list[tuple[int, ...]],
    ) -> tuple[Any, Any, Any]:
        """One GETBULK; (error indication, error status, var-binds).

        pysnmp's command generator itself, by numeric OID: the high-level ``bulk_cmd``
        resolves each OID through its MIB view first, which costs more than the request.
        """
        from pysnmp.entity.rfc3413 import cmdgen
        from pysnmp.proto.rfc1902 import Null, ObjectName

        addr_name, _params = _lcd().configure(
            self._engine, auth, self._transport, context.contextName
        )
        future: asyncio.Future[tuple[Any, Any, Any]] = asyncio.get_running_loop().create_future()

        def answered(*args: Any) -> None:
            _engine, _handle, indication, status, _index, var_binds, _context = args
            if not future.done():
                future.set_result((indication, status, var_binds))

        cmdgen.BulkCommandGenerator().send_varbinds(
            self._engine,
            addr_name,
            context.contextEngineId,
            context.contextName,
            non_repeaters,
            repetitions,
            [(ObjectName(oid), Null()) for oid in oids],
            answered,
            None,
        )
        return await future

    async def _walk_columns(
        self,
        auth: Any,
        context: Any,
        scalars: list[tuple[int, ...]],
        prefixes: list[tuple[int, ...]],
        expected: list[int | None] | None = None,
    ) -> tuple[Row, list[Row]]:
        """Scalars (by the OID before them) and columns (by prefix), walked side by side.

        Each GETBULK asks for the scalars as non-repeaters (first request only) and every
        column not finished yet as a repeater, from where that column stopped; a column is
        finished once an answer leaves its prefix. ``max-repetitions`` is one more
        than the rows still ``expected`` (each column's rows at the last poll) when
        they are known, else what keeps an answer near :data:`BULK_VALUES` values,
        and never more than that; an agent that
        answers tooBig gets half as many, and one that answers fewer (RFC 3416 allows
        it) is simply asked again.

        Returns:
            The scalars' values by full OID, and each column's rows by index.
        """
        found: Row = {}
        rows: list[Row] = [{} for _ in prefixes]
        after = dict(enumerate(prefixes))  # unfinished column -> the OID to continue after
        hints = expected or [None] * len(prefixes)

        def wanted() -> int:
            cap = BULK_VALUES // max(1, len(after))
            left = [(hints[i], len(rows[i])) for i in after]
            # Rows still expected, while no column has outgrown its last count (a table
            # that grew, an alert more: then as many as an answer should hold).
            if left and all(h is not None and seen <= h for h, seen in left):
                cap = min(cap, max((h or 0) - seen for h, seen in left) + 1)
            return max(1, min(MAX_REPETITIONS, cap))

        repetitions = wanted()
        requests = 0
        while after or scalars:
            requests += 1
            if requests > MAX_REQUESTS:
                msg = f"no end to the tables after {MAX_REQUESTS} requests"
                raise SnmpUnreachable(msg)
            pending = list(after)
            asked = [*scalars, *(after[i] for i in pending)]
            indication, status, var_binds = await self._bulk(
                auth, context, len(scalars), repetitions, asked
            )
            if not indication and status and int(status) == TOO_BIG and repetitions > 1:
                repetitions //= 2
                continue
            _check(indication, status)
            for (oid, value), before in zip(var_binds, scalars, strict=False):
                if tuple(oid)[:-1] == before and (converted := _value(value)) is not None:
                    found[tuple(oid)] = converted
            body = var_binds[len(scalars) :]
            scalars = []
            if pending and not body:
                msg = "an empty answer to GETBULK"
                raise SnmpUnreachable(msg)
            for position, (oid, value) in enumerate(body):
                column = pending[position % len(pending)]
                if column not in after:
                    continue
                name, prefix = tuple(oid), prefixes[column]
                # Out of the column, the end of the MIB, or not increasing (a broken agent).
                if name[: len(prefix)] != prefix or name <= after[column] or _is_end(value):
                    del after[column]
                    continue
                converted = _value(value)
                if converted is not None:
                    rows[column][name[len(prefix) :]] = converted
                after[column] = name
                if len(rows[column]) >= MAX_ROWS:
                    del after[column]
            repetitions = wanted()
        return found, rows


Column = tuple[str, int | None, tuple[int, ...]]


def _put(tables: dict[str, Any], key: str, col: int | None, rows: Row) -> None:
    if col is None:
        tables[key] = rows
    else:
        tables.setdefault(key, {})[col] = rows


def _table_rows(tables: Mapping[str, Any]) -> dict[str, frozenset[tuple[int, ...]]]:
    """The indexes of each table's every-poll column (ROWS_OF) in ``tables``."""
    return {key: frozenset((tables.get(key) or {}).get(col) or {}) for key, col in ROWS_OF.items()}


def _batches(columns: list[Column], rows: Mapping[tuple[int, ...], int]) -> list[list[Column]]:
    """The columns of one poll in GETBULK batches, by the rows each had at the last poll.

    A batch's repetitions are its longest column's rows plus one, so a column shorter
    than that costs values read past its end, and every batch costs a message: adjacent
    batches (by rows) are merged while that costs fewer than :data:`MESSAGE_VALUES`
    values more than sending both. Columns not seen yet come first, in one batch.
    """
    by_rows: dict[int, list[Column]] = {}
    unknown: list[Column] = []
    for column in columns:
        count = rows.get(column[2])
        if count is None:
            unknown.append(column)
        else:
            by_rows.setdefault(count, []).append(column)
    merged: list[tuple[int, list[Column]]] = []
    for count in sorted(by_rows):
        batch = by_rows[count]
        if merged:
            last_count, last = merged[-1]
            apart = len(last) * (last_count + 1) + len(batch) * (count + 1) + MESSAGE_VALUES
            together = (len(last) + len(batch)) * (count + 1)
            if together <= apart:
                merged[-1] = (count, last + batch)
                continue
        merged.append((count, list(batch)))
    return ([unknown] if unknown else []) + [batch for _count, batch in merged]


def _lcd() -> Any:
    """pysnmp's configurator of targets and credentials in an engine (cached there by key)."""
    global _LCD  # one per process, made on the first poll (pysnmp is imported lazily)
    if _LCD is None:
        from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator

        _LCD = CommandGeneratorLcdConfigurator()
    return _LCD


_LCD: Any = None


def _no_ciphers() -> bool:
    """pysnmp leaves AES out, silently, when cryptography is missing or older than 47."""
    from pysnmp.proto.secmod.rfc3826.priv import aes

    return bool(aes.PysnmpCryptoError)


def _check(indication: Any, status: Any) -> None:
    if indication:
        name = type(indication).__name__
        if name == "RequestTimedOut":
            msg = "timeout"
        elif name in ("WrongDigest", "DecryptionError", "UnknownUserName", "UnknownSecurityName"):
            msg = f"authentication failed: {indication}"
        else:
            msg = str(indication)
        raise SnmpUnreachable(msg[:200])
    if status and int(status) not in (0, 2):  # noSuchName (SNMPv1 proxies) reads as "absent"
        msg = f"error status {status.prettyPrint() if hasattr(status, 'prettyPrint') else status}"
        raise SnmpUnreachable(msg)


def _is_end(value: Any) -> bool:
    return value.__class__.__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView")


def _value(value: Any) -> int | str | bytes | None:
    """A Python value of an SNMP value; ``None`` for noSuchObject/noSuchInstance/endOfMibView."""
    from pyasn1.type import univ

    tag = getattr(value, "tagSet", None)
    if tag is None or value.__class__.__name__ in (
        "NoSuchObject",
        "NoSuchInstance",
        "EndOfMibView",
        "Null",
    ):
        return None
    if isinstance(value, univ.ObjectIdentifier):
        return ".".join(str(part) for part in value)
    if isinstance(value, univ.OctetString):
        return bytes(value.asOctets())
    if isinstance(value, univ.Integer):
        return int(value)
    return None
