"""SNMP by numeric OID through pysnmp: credentials, GET, GETBULK, walking columns, values.

:class:`~agent.health.collectors.snmp.PrinterMibCollector` polls with these: the
credentials of a :class:`~agent.health.collectors.snmp_target.SnmpTarget`
(:func:`credentials`), one GET (:func:`get`) or GETBULK (:func:`bulk`) by numeric OID
(no MIB is resolved), columns walked side by side with as few GETBULKs as the rows
allow (:func:`walk_columns`, :func:`batches`), pysnmp's values as Python's
(:func:`value_of`) and its errors as :class:`SnmpUnreachable` (:func:`check`). pysnmp
is imported inside the functions only: importing this module loads none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from agent.health.collectors.snmp_target import SnmpTarget

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


Oid = tuple[int, ...]
Row = dict[Oid, Any]
Column = tuple[str, int | None, tuple[int, ...]]
#: One GETBULK (non-repeaters, max-repetitions, OIDs): (error indication, status, var-binds).
Bulk = Callable[[int, int, list[tuple[int, ...]]], Awaitable[tuple[Any, Any, Any]]]


class SnmpUnreachable(Exception):
    """The device gave no usable answer (timeout, credentials, transport)."""


def credentials(target: SnmpTarget) -> tuple[Any, Any]:
    """pysnmp's authentication data and context of ``target`` (SNMPv2c or SNMPv3 authPriv).

    Raises:
        SnmpUnreachable: SNMPv3 without the ciphers (cryptography missing or too old).
    """
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

    t = target
    if t.version == "3" and no_ciphers():
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


async def get(
    engine: Any, auth: Any, transport: Any, context: Any, oids: list[tuple[int, ...]]
) -> Row:
    """One GET of ``oids``; the values by OID (absent ones left out)."""
    from pysnmp.hlapi.v3arch.asyncio import ObjectIdentity, ObjectType, get_cmd

    result = await get_cmd(
        engine,
        auth,
        transport,
        context,
        *(ObjectType(ObjectIdentity(oid)) for oid in oids),
        lookupMib=False,
    )
    indication, status, _index, var_binds = result
    check(indication, status)
    return {tuple(oid): value_of(value) for oid, value in var_binds if value_of(value) is not None}


async def bulk(
    engine: Any,
    auth: Any,
    transport: Any,
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

    addr_name, _params = _lcd().configure(engine, auth, transport, context.contextName)
    future: asyncio.Future[tuple[Any, Any, Any]] = asyncio.get_running_loop().create_future()

    def answered(*args: Any) -> None:
        _engine, _handle, indication, status, _index, var_binds, _context = args
        if not future.done():
            future.set_result((indication, status, var_binds))

    cmdgen.BulkCommandGenerator().send_varbinds(
        engine,
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


async def walk_columns(
    send: Bulk,
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
        indication, status, var_binds = await send(len(scalars), repetitions, asked)
        if not indication and status and int(status) == TOO_BIG and repetitions > 1:
            repetitions //= 2
            continue
        check(indication, status)
        for (oid, value), before in zip(var_binds, scalars, strict=False):
            if tuple(oid)[:-1] == before and (converted := value_of(value)) is not None:
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
            if name[: len(prefix)] != prefix or name <= after[column] or is_end(value):
                del after[column]
                continue
            converted = value_of(value)
            if converted is not None:
                rows[column][name[len(prefix) :]] = converted
            after[column] = name
            if len(rows[column]) >= MAX_ROWS:
                del after[column]
        repetitions = wanted()
    return found, rows


def batches(columns: list[Column], rows: Mapping[tuple[int, ...], int]) -> list[list[Column]]:
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


def no_ciphers() -> bool:
    """pysnmp leaves AES out, silently, when cryptography is missing or older than 47."""
    from pysnmp.proto.secmod.rfc3826.priv import aes

    return bool(aes.PysnmpCryptoError)


def check(indication: Any, status: Any) -> None:
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


def is_end(value: Any) -> bool:
    return value.__class__.__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView")


def value_of(value: Any) -> int | str | bytes | None:
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
