"""What one poll of a printer means: metrics, faults and inventory from the tables read.

:func:`interpret` is a pure function of the tables
:class:`~agent.health.collectors.snmp.PrinterMibCollector` read (unit-testable
without SNMP); :class:`ProfileReading` is what a poll gives.

Metrics
-------
``mfp.toner_<colorant>_percent``
    Each supply of type toner (3) or tonerCartridge (21) in
    ``prtMarkerSuppliesTable``, joined on ``prtMarkerSuppliesColorantIndex``
    with ``prtMarkerColorantValue`` (lower-cased, ``[a-z0-9_]``; ``black``,
    ``cyan``...; ``unknown`` without a colorant). Percent is level / max
    capacity x 100. A second toner of the same colorant gets ``_<index>``.
``mfp.supply_percent:<name>``
    Every other supply; ``<name>`` is the supply type's name (``waste_toner``,
    ``opc``, ``fuser``, ``developer``, ``transfer_unit``, ...), followed by
    ``_<colorant>`` when the supply has one (``opc_cyan``). A supply consumed
    (class 3) reports how much is left; a receptacle filled (class 4, waste
    toner) reports how full it is: (max - level) / max x 100, since its level
    is the space remaining (RFC 3805).
``mfp.pages_total``
    Sum of ``prtMarkerLifeCount`` over the markers counting impressions (7) or
    sheets (8).
``mfp.paper_tray<n>_percent``
    ``prtInputCurrentLevel`` / ``prtInputMaxCapacity`` x 100 for input ``n``
    (``prtInputIndex``).

Special levels (-1 "other / no restriction", -2 "unknown", -3 "some
remaining") and a max capacity that is not a positive number are never turned
into a percentage: the metric is left out and the reading's ``unknown_levels``
maps the metric name to ``unrestricted``, ``unknown`` or ``some_remaining``
(the gateway may show it; it is not telemetry). A level above the capacity is
clamped to 100 %.

Faults (one per code; two alerts with the same code are merged into one message)
----------------------------------------------------------------------------------
From ``prtAlertTable`` (``prtAlertCode``, ``prtAlertGroup``, ``prtAlertGroupIndex``,
``prtAlertDescription``, ``prtAlertLocation``):

=====================================================  ==============================  ========
alert (code)                                           fault code                      severity
=====================================================  ==============================  ========
jam (8)                                                ``JAM`` (description, location)  error
coverOpen (3), interlockOpen (5), doorOpen (501)       ``COVER-OPEN``                  error
markerTonerEmpty (1101); subunitEmpty (13) on a toner  ``TONER-OUT-<COLOR>``          error
markerTonerAlmostEmpty (1104); subunitAlmostEmpty      ``TONER-LOW-<COLOR>``           warning
(12) on a toner
inputMediaSupplyEmpty (803); subunitEmpty (13) on      ``PAPER-OUT-TRAY<n>``           warning
an input
inputMediaTrayMissing (801); subunitMissing (9) on an  ``TRAY-MISSING-TRAY<n>``        warning
input
subunitUnrecoverableFailure (30), ...StorageError      ``SERVICE-CALL``                critical
(32), MotorFailure (33), TimingFailure (37),
ThermistorFailure (38), markerFuserOverTemperature
(1002), ...TimingFailure (1003), ...ThermistorFailure
(1004)
any other alert of severity critical (3) or warning    ``PRT-<code>`` (description)    error /
(4), except the "good news" codes below                                                warning
=====================================================  ==============================  ========

``<COLOR>`` is the colorant of the alert's supply, upper-cased with ``-`` for ``_``
(``prtAlertGroupIndex`` is the ``prtMarkerSuppliesIndex`` for group
markerSupplies (11)), ``UNKNOWN`` when it cannot be told; ``<n>`` is the
``prtInputIndex`` of group input (8). Alerts of severity
warningBinaryChangeEvent (5) are events, not states, and the codes coverClosed
(4), interlockClosed (6), configurationChange (7), subunitClosed (19),
subunitTurnedOn (20), subunitAdded (25), subunitResourceAdded (27), doorClosed
(502), powerUp (503), printerReadyToPrint (507) and alertRemovalOfBinaryChangeEntry
(1801) are never faults.

From ``hrPrinterDetectedErrorState`` (RFC 2790 BITS, bit 0 the high bit of the
first octet), when the alert table did not already give the same kind:
jammed (5) -> ``JAM``; doorOpen (4) -> ``COVER-OPEN``; serviceRequested (7) ->
``SERVICE-CALL``; noToner (3) -> ``TONER-OUT-<COLOR>`` for each toner at level 0
(else ``TONER-OUT-UNKNOWN``); lowToner (2) -> ``TONER-LOW-<COLOR>`` for the toner
with the lowest known level above 0 (else ``TONER-LOW-UNKNOWN``); noPaper (1) and
inputTrayEmpty (13) -> ``PAPER-OUT-TRAY<n>`` for each input at level 0 (else
``PAPER-OUT-UNKNOWN``); inputTrayMissing (8) -> ``TRAY-MISSING-UNKNOWN``;
markerSupplyMissing (10) -> ``SUPPLY-MISSING`` (error); outputFull (12) ->
``OUTPUT-FULL`` (warning); offline (6) -> ``OFFLINE`` (warning);
overduePreventMaint (14) -> ``MAINTENANCE-DUE`` (warning). lowPaper (0) and
outputNearFull (11) are not faults (the tray levels show them).

``SERIAL-MISMATCH`` (error) when ``expected_serial`` is given and
``prtGeneralSerialNumber`` differs: the wrong printer answers at that address.

Inventory
---------
``sys_descr`` (sysDescr), ``sys_name`` (sysName), ``serial``
(prtGeneralSerialNumber), ``model`` (hrDeviceDescr of the printer device,
hrDeviceType hrDevicePrinter), ``firmware`` (ENTITY-MIB entPhysicalFirmwareRev,
else entPhysicalSoftwareRev, where present); only the keys the device answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from agent.health.collectors.base import Reading
from agent.health.collectors.printer_mib import (
    ALERT_CODE,
    ALERT_DESCR,
    ALERT_GROUP,
    ALERT_GROUP_INDEX,
    ALERT_LOCATION,
    ALERT_SEVERITY,
    BIT_DOOR_OPEN,
    BIT_JAMMED,
    BIT_LOW_TONER,
    BIT_MAINTENANCE,
    BIT_NO_PAPER,
    BIT_NO_TONER,
    BIT_OFFLINE,
    BIT_OUTPUT_FULL,
    BIT_SERVICE,
    BIT_SUPPLY_MISSING,
    BIT_TRAY_EMPTY,
    BIT_TRAY_MISSING,
    COUNTER_UNITS_OF_PAGES,
    COVER_CODES,
    GOOD_NEWS_CODES,
    GROUP_INPUT,
    GROUP_SUPPLIES,
    HR_DEVICE_PRINTER,
    INPUT_LEVEL,
    INPUT_MAX,
    MARKER_COUNTER_UNIT,
    MARKER_LIFE_COUNT,
    SERVICE_CODES,
    SEVERITY_CRITICAL,
    SEVERITY_WARNING,
    SPECIAL_LEVELS,
    SUPPLY_CLASS,
    SUPPLY_COLORANT,
    SUPPLY_LEVEL,
    SUPPLY_MAX,
    SUPPLY_RECEPTACLE,
    SUPPLY_TYPE,
    SUPPLY_TYPE_NAMES,
    TONER_TYPES,
)
from shared.wire import FaultReport
from shared.wire import Severity as FaultSeverity

MAX_MESSAGE: Final = 1024

_SEVERITY_ORDER: Final[Mapping[str, int]] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


@dataclass(slots=True)
class ProfileReading(Reading):
    """What one poll of a device saw.

    Attributes:
        reachable: The device answered (with valid credentials).
        reason: Why not, in one line (``timeout``, ``authentication failed: ...``).
        inventory: Identity: ``sys_descr``, ``sys_name``, ``serial``, ``model``, ``firmware``.
        unknown_levels: Metrics left out because the device gave a special level.
        serial_mismatch: The serial differs from ``SnmpTarget.expected_serial``.
    """

    reachable: bool = True
    reason: str | None = None
    inventory: dict[str, str] = field(default_factory=dict)
    unknown_levels: dict[str, str] = field(default_factory=dict)
    serial_mismatch: bool = False


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return ""
    return "".join(c for c in raw if c.isprintable()).strip()


def _slug(raw: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")[:32] or "unknown"


def _percent(level: Any, maximum: Any, *, receptacle: bool = False) -> float | str:
    """Percent of a level, or the name of a special level (never a number)."""
    if not isinstance(level, int):
        return "unknown"
    if level < 0:
        return SPECIAL_LEVELS.get(level, "unknown")
    if not isinstance(maximum, int) or maximum <= 0:
        return SPECIAL_LEVELS.get(maximum, "unknown") if isinstance(maximum, int) else "unknown"
    capped: int = min(level, maximum)
    remaining = (maximum - capped) if receptacle else capped
    return round(remaining * 100.0 / maximum, 1)


@dataclass(slots=True)
class _Supply:
    index: tuple[int, ...]
    kind: int
    colorant: str
    metric: str
    percent: float | None


def interpret(tables: Mapping[str, Any], *, expected_serial: str | None = None) -> ProfileReading:
    """Metrics, faults and inventory from the tables a poll read (see the module docstring)."""
    reading = ProfileReading()
    _inventory(tables, reading, expected_serial)
    supplies = _supplies(tables, reading)
    trays = _trays(tables, reading)
    _pages(tables, reading)
    faults: dict[str, FaultReport] = {}
    _alerts(tables, supplies, faults)
    _error_state(tables, supplies, trays, faults)
    if reading.serial_mismatch:
        _add(
            faults,
            "SERIAL-MISMATCH",
            "error",
            f"serial {reading.inventory.get('serial', '?')} is not the registered one "
            f"({expected_serial}): another printer answers at this address",
        )
    reading.faults = list(faults.values())
    return reading


def _inventory(tables: Mapping[str, Any], reading: ProfileReading, expected: str | None) -> None:
    inventory = reading.inventory
    for key in ("sys_descr", "sys_name"):
        if text := _text(tables.get(key)):
            inventory[key] = text[:256]
    serials = [_text(v) for _i, v in sorted(tables.get("serial", {}).items())]
    if serial := next((s for s in serials if s), ""):
        inventory["serial"] = serial[:128]
    types = tables.get("hr_type", {})
    descriptions = tables.get("hr_descr", {})
    printers = [i for i, kind in sorted(types.items()) if kind == HR_DEVICE_PRINTER]
    for index in printers or sorted(descriptions):
        if model := _text(descriptions.get(index)):
            inventory["model"] = model[:256]
            break
    for key in ("firmware", "software"):
        found = next((t for _i, v in sorted(tables.get(key, {}).items()) if (t := _text(v))), "")
        if found:
            inventory["firmware"] = found[:128]
            break
    if expected is not None and expected.strip():
        reading.serial_mismatch = inventory.get("serial", "") != expected.strip()


def _supplies(tables: Mapping[str, Any], reading: ProfileReading) -> dict[tuple[int, ...], _Supply]:
    columns = tables.get("supplies", {})
    colorants = {index: _slug(_text(v)) for index, v in tables.get("colorant", {}).items()}
    found: dict[tuple[int, ...], _Supply] = {}
    for index in sorted(columns.get(SUPPLY_TYPE, {})):
        kind = columns[SUPPLY_TYPE][index]
        device = index[:-1]
        colorant_index = columns.get(SUPPLY_COLORANT, {}).get(index, 0)
        colorant = colorants.get((*device, colorant_index), "") if colorant_index else ""
        receptacle = columns.get(SUPPLY_CLASS, {}).get(index) == SUPPLY_RECEPTACLE
        if kind in TONER_TYPES:
            metric = f"mfp.toner_{colorant or 'unknown'}_percent"
            if metric in reading.metrics or metric in reading.unknown_levels:
                metric = f"mfp.toner_{colorant or 'unknown'}_{index[-1]}_percent"
        else:
            name = (
                SUPPLY_TYPE_NAMES.get(kind, f"type{kind}") if isinstance(kind, int) else "unknown"
            )
            if colorant:
                name = f"{name}_{colorant}"
            metric = f"mfp.supply_percent:{name}"
            if metric in reading.metrics or metric in reading.unknown_levels:
                metric = f"{metric}_{index[-1]}"
        value = _percent(
            columns.get(SUPPLY_LEVEL, {}).get(index),
            columns.get(SUPPLY_MAX, {}).get(index),
            receptacle=receptacle,
        )
        if isinstance(value, float):
            reading.metrics[metric] = value
        else:
            reading.unknown_levels[metric] = value
        found[index] = _Supply(
            index, kind, colorant, metric, value if isinstance(value, float) else None
        )
    return found


def _trays(tables: Mapping[str, Any], reading: ProfileReading) -> dict[int, float | None]:
    columns = tables.get("input", {})
    trays: dict[int, float | None] = {}
    for index in sorted(columns.get(INPUT_LEVEL, {})):
        number = index[-1]
        metric = f"mfp.paper_tray{number}_percent"
        value = _percent(columns[INPUT_LEVEL][index], columns.get(INPUT_MAX, {}).get(index))
        if isinstance(value, float):
            reading.metrics[metric] = value
            trays[number] = value
        else:
            reading.unknown_levels[metric] = value
            trays[number] = None
    return trays


def _pages(tables: Mapping[str, Any], reading: ProfileReading) -> None:
    columns = tables.get("marker", {})
    units = columns.get(MARKER_COUNTER_UNIT, {})
    counts = [
        count
        for index, count in columns.get(MARKER_LIFE_COUNT, {}).items()
        if isinstance(count, int) and count >= 0 and units.get(index, 7) in COUNTER_UNITS_OF_PAGES
    ]
    if counts:
        reading.metrics["mfp.pages_total"] = float(sum(counts))


def _add(faults: dict[str, FaultReport], code: str, severity: FaultSeverity, message: str) -> None:
    code = code[:64]
    existing = faults.get(code)
    if existing is None:
        faults[code] = {"code": code, "severity": severity, "message": message[:MAX_MESSAGE]}
        return
    if message and message not in existing["message"]:
        existing["message"] = f"{existing['message']}; {message}"[:MAX_MESSAGE]
    if _SEVERITY_ORDER[severity] > _SEVERITY_ORDER[existing["severity"]]:
        existing["severity"] = severity


def _color(colorant: str) -> str:
    """The ``<COLOR>`` of a fault code: ``light_cyan`` -> ``LIGHT-CYAN``."""
    return (colorant or "unknown").upper().replace("_", "-")


def _color_of(
    supplies: Mapping[tuple[int, ...], _Supply], device: tuple[int, ...], index: Any
) -> str:
    supply = supplies.get((*device, index)) if isinstance(index, int) else None
    return _color(supply.colorant if supply else "")


def _alerts(
    tables: Mapping[str, Any],
    supplies: Mapping[tuple[int, ...], _Supply],
    faults: dict[str, FaultReport],
) -> None:
    columns = tables.get("alert", {})
    for index in sorted(columns.get(ALERT_CODE, {})):
        code = columns[ALERT_CODE][index]
        severity = columns.get(ALERT_SEVERITY, {}).get(index)
        group = columns.get(ALERT_GROUP, {}).get(index)
        group_index = columns.get(ALERT_GROUP_INDEX, {}).get(index)
        description = _text(columns.get(ALERT_DESCR, {}).get(index))
        location = columns.get(ALERT_LOCATION, {}).get(index)
        device = index[:-1]
        if not isinstance(code, int) or severity not in (SEVERITY_CRITICAL, SEVERITY_WARNING):
            continue
        if code in GOOD_NEWS_CODES:
            continue
        toner = group == GROUP_SUPPLIES and (
            (s := supplies.get((*device, group_index))) is not None and s.kind in TONER_TYPES
            if isinstance(group_index, int)
            else False
        )
        tray = group_index if group == GROUP_INPUT and isinstance(group_index, int) else None
        if code == 8:
            where = f" (location {location})" if isinstance(location, int) and location > 0 else ""
            _add(faults, "JAM", "error", f"Paper jam: {description or 'jam'}{where}")
        elif code in COVER_CODES:
            _add(faults, "COVER-OPEN", "error", description or "Cover open")
        elif code == 1101 or (code == 13 and toner):
            color = _color_of(supplies, device, group_index)
            _add(
                faults, f"TONER-OUT-{color}", "error", description or f"{color.lower()} toner empty"
            )
        elif code == 1104 or (code == 12 and toner):
            color = _color_of(supplies, device, group_index)
            _add(
                faults, f"TONER-LOW-{color}", "warning", description or f"{color.lower()} toner low"
            )
        elif code == 803 or (code == 13 and tray is not None):
            where = f"TRAY{tray}" if tray is not None else "UNKNOWN"
            _add(
                faults,
                f"PAPER-OUT-{where}",
                "warning",
                description or f"Paper out: {where.lower()}",
            )
        elif code == 801 or (code == 9 and tray is not None):
            where = f"TRAY{tray}" if tray is not None else "UNKNOWN"
            _add(
                faults,
                f"TRAY-MISSING-{where}",
                "warning",
                description or f"{where.lower()} missing",
            )
        elif code in SERVICE_CODES:
            _add(faults, "SERVICE-CALL", "critical", description or f"Printer-MIB alert {code}")
        else:
            level: FaultSeverity = "error" if severity == SEVERITY_CRITICAL else "warning"
            _add(faults, f"PRT-{code}", level, description or f"Printer-MIB alert {code}")


def _bits(raw: Any) -> set[int]:
    if not isinstance(raw, bytes):
        return set()
    return {i * 8 + b for i, octet in enumerate(raw) for b in range(8) if octet & (0x80 >> b)}


def _error_state(
    tables: Mapping[str, Any],
    supplies: Mapping[tuple[int, ...], _Supply],
    trays: Mapping[int, float | None],
    faults: dict[str, FaultReport],
) -> None:
    bits: set[int] = set()
    for raw in tables.get("hr_error", {}).values():
        bits |= _bits(raw)
    if not bits:
        return

    def have(prefix: str) -> bool:
        return any(code.startswith(prefix) for code in faults)

    toners = [s for s in supplies.values() if s.kind in TONER_TYPES]
    source = "hrPrinterDetectedErrorState"
    if BIT_JAMMED in bits and not have("JAM"):
        _add(faults, "JAM", "error", f"Paper jam ({source})")
    if BIT_DOOR_OPEN in bits and not have("COVER-OPEN"):
        _add(faults, "COVER-OPEN", "error", f"Cover open ({source})")
    if BIT_SERVICE in bits and not have("SERVICE-CALL"):
        _add(faults, "SERVICE-CALL", "critical", f"Service requested ({source})")
    if BIT_NO_TONER in bits and not have("TONER-OUT-"):
        empty = [_color(s.colorant) for s in toners if s.percent == 0.0]
        for color in empty or ["UNKNOWN"]:
            _add(faults, f"TONER-OUT-{color}", "error", f"Toner empty ({source})")
    if BIT_LOW_TONER in bits and not have("TONER-LOW-"):
        # The lowest toner not already empty (an empty one has its TONER-OUT fault).
        known = sorted((s for s in toners if s.percent), key=lambda s: s.percent or 0.0)
        color = _color(known[0].colorant if known else "")
        _add(faults, f"TONER-LOW-{color}", "warning", f"Toner low ({source})")
    if bits & {BIT_NO_PAPER, BIT_TRAY_EMPTY} and not have("PAPER-OUT-"):
        empty_trays = [n for n, percent in sorted(trays.items()) if percent == 0.0]
        for where in [f"TRAY{n}" for n in empty_trays] or ["UNKNOWN"]:
            _add(faults, f"PAPER-OUT-{where}", "warning", f"Paper out ({source})")
    if BIT_TRAY_MISSING in bits and not have("TRAY-MISSING-"):
        _add(faults, "TRAY-MISSING-UNKNOWN", "warning", f"Input tray missing ({source})")
    for bit, code, severity, message in (
        (BIT_SUPPLY_MISSING, "SUPPLY-MISSING", "error", "Marker supply missing"),
        (BIT_OUTPUT_FULL, "OUTPUT-FULL", "warning", "Output tray full"),
        (BIT_OFFLINE, "OFFLINE", "warning", "Printer offline"),
        (BIT_MAINTENANCE, "MAINTENANCE-DUE", "warning", "Preventive maintenance overdue"),
    ):
        if bit in bits:
            _add(faults, code, severity, f"{message} ({source})")  # type: ignore[arg-type]
