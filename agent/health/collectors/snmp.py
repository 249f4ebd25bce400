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

import asyncio
import logging
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent.health.collectors.base import Reading
from shared.errors import ConfigError
from shared.wire import FaultReport
from shared.wire import Severity as FaultSeverity

logger = logging.getLogger(__name__)

SnmpVersion = Literal["2c", "3"]
AUTH_PROTOCOLS: Final = ("sha", "sha256", "sha512")
PRIV_PROTOCOLS: Final = ("aes", "aes256")
#: Keys of an SNMP target in the agent's configuration (``[agent.snmp]``, ``[[agent.devices]]``).
TARGET_KEYS: Final = (
    "host",
    "port",
    "snmp_version",
    "snmp_community",
    "snmp_user",
    "snmp_auth_protocol",
    "snmp_auth_key",
    "snmp_priv_protocol",
    "snmp_priv_key",
    "snmp_context",
    "snmp_timeout_s",
    "snmp_retries",
    "expected_serial",
)

# Numeric OIDs (no MIB at run time).
SYS_DESCR: Final = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME: Final = (1, 3, 6, 1, 2, 1, 1, 5, 0)
HR_DEVICE_TYPE: Final = (1, 3, 6, 1, 2, 1, 25, 3, 2, 1, 2)
HR_DEVICE_DESCR: Final = (1, 3, 6, 1, 2, 1, 25, 3, 2, 1, 3)
HR_DEVICE_PRINTER: Final = "1.3.6.1.2.1.25.3.1.5"
HR_PRINTER_ERROR_STATE: Final = (1, 3, 6, 1, 2, 1, 25, 3, 5, 1, 2)
ENT_FIRMWARE_REV: Final = (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1, 9)
ENT_SOFTWARE_REV: Final = (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1, 10)
PRT_SERIAL: Final = (1, 3, 6, 1, 2, 1, 43, 5, 1, 1, 17)
PRT_INPUT: Final = (1, 3, 6, 1, 2, 1, 43, 8, 2, 1)
PRT_MARKER: Final = (1, 3, 6, 1, 2, 1, 43, 10, 2, 1)
PRT_SUPPLIES: Final = (1, 3, 6, 1, 2, 1, 43, 11, 1, 1)
PRT_COLORANT_VALUE: Final = (1, 3, 6, 1, 2, 1, 43, 12, 1, 1, 4)
PRT_ALERT: Final = (1, 3, 6, 1, 2, 1, 43, 18, 1, 1)

# Columns.
INPUT_MAX, INPUT_LEVEL = 9, 10
MARKER_COUNTER_UNIT, MARKER_LIFE_COUNT = 3, 4
SUPPLY_COLORANT, SUPPLY_CLASS, SUPPLY_TYPE, SUPPLY_MAX, SUPPLY_LEVEL = 3, 4, 5, 8, 9
ALERT_SEVERITY, ALERT_GROUP, ALERT_GROUP_INDEX, ALERT_LOCATION, ALERT_CODE, ALERT_DESCR = (
    2,
    4,
    5,
    6,
    7,
    8,
)

SUPPLY_RECEPTACLE: Final = 4
TONER_TYPES: Final = frozenset({3, 21})
SUPPLY_TYPE_NAMES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "toner",
    4: "waste_toner",
    5: "ink",
    6: "ink_cartridge",
    7: "ink_ribbon",
    8: "waste_ink",
    9: "opc",
    10: "developer",
    11: "fuser_oil",
    12: "solid_wax",
    13: "ribbon_wax",
    14: "waste_wax",
    15: "fuser",
    16: "corona_wire",
    17: "fuser_oil_wick",
    18: "cleaner_unit",
    19: "fuser_cleaning_pad",
    20: "transfer_unit",
    21: "toner_cartridge",
    22: "fuser_oiler",
    23: "water",
    24: "waste_water",
    25: "glue_water_additive",
    26: "waste_paper",
    27: "binding_supply",
    28: "banding_supply",
    29: "stitching_wire",
    30: "shrink_wrap",
    31: "paper_wrap",
    32: "staples",
    33: "inserts",
    34: "covers",
}
SPECIAL_LEVELS: Final[Mapping[int, str]] = {-1: "unrestricted", -2: "unknown", -3: "some_remaining"}
COUNTER_UNITS_OF_PAGES: Final = frozenset({7, 8})

GROUP_INPUT, GROUP_SUPPLIES = 8, 11
SEVERITY_CRITICAL, SEVERITY_WARNING = 3, 4
COVER_CODES: Final = frozenset({3, 5, 501})
SERVICE_CODES: Final = frozenset({30, 32, 33, 37, 38, 1002, 1003, 1004})
GOOD_NEWS_CODES: Final = frozenset({4, 6, 7, 19, 20, 25, 27, 502, 503, 507, 1801})

#: hrPrinterDetectedErrorState bit numbers (RFC 2790).
BIT_NO_PAPER, BIT_LOW_TONER, BIT_NO_TONER, BIT_DOOR_OPEN, BIT_JAMMED = 1, 2, 3, 4, 5
BIT_OFFLINE, BIT_SERVICE, BIT_TRAY_MISSING, BIT_SUPPLY_MISSING = 6, 7, 8, 10
BIT_OUTPUT_FULL, BIT_TRAY_EMPTY, BIT_MAINTENANCE = 12, 13, 14

#: The columns a poll reads, in groups walked side by side (one GETBULK each, mostly).
#: (key in the tables, column or None for a column read whole, OID of the column).
COLUMN_GROUPS: Final[
    tuple[tuple[str, tuple[tuple[str, int | None, tuple[int, ...]], ...]], ...]
] = (
    (
        "identity",
        (
            ("hr_type", None, HR_DEVICE_TYPE),
            ("hr_descr", None, HR_DEVICE_DESCR),
            ("firmware", None, ENT_FIRMWARE_REV),
            ("software", None, ENT_SOFTWARE_REV),
        ),
    ),
    (
        "state",
        (
            ("hr_error", None, HR_PRINTER_ERROR_STATE),
            ("serial", None, PRT_SERIAL),
            ("colorant", None, PRT_COLORANT_VALUE),
        ),
    ),
    ("input", tuple(("input", c, (*PRT_INPUT, c)) for c in (INPUT_MAX, INPUT_LEVEL))),
    (
        "marker",
        tuple(("marker", c, (*PRT_MARKER, c)) for c in (MARKER_COUNTER_UNIT, MARKER_LIFE_COUNT)),
    ),
    (
        "supplies",
        tuple(
            ("supplies", c, (*PRT_SUPPLIES, c))
            for c in (SUPPLY_COLORANT, SUPPLY_CLASS, SUPPLY_TYPE, SUPPLY_MAX, SUPPLY_LEVEL)
        ),
    ),
    (
        "alert",
        tuple(
            ("alert", c, (*PRT_ALERT, c))
            for c in (
                ALERT_SEVERITY,
                ALERT_GROUP,
                ALERT_GROUP_INDEX,
                ALERT_LOCATION,
                ALERT_CODE,
                ALERT_DESCR,
            )
        ),
    ),
)
#: The identity (group "identity" and sysDescr/sysName) is read at the first poll, after
#: the device was unreachable, and then every IDENTITY_EVERY polls (hourly at 60 s).
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

MAX_MESSAGE: Final = 1024
#: Rows read from one table at most: a broken agent looping on its table cannot exhaust us.
MAX_ROWS: Final = 2_000

_SEVERITY_ORDER: Final[Mapping[str, int]] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    """One SNMP agent to poll, and how to authenticate to it.

    Secrets (community, keys) are left out of ``repr`` so they are never logged.

    Attributes:
        host: Address or name of the device.
        port: UDP port (161).
        version: ``2c`` (community) or ``3`` (USM user, authPriv).
        community: SNMPv2c community.
        user: SNMPv3 USM user name.
        auth_protocol: ``sha``, ``sha256`` or ``sha512`` (HMAC-SHA-1/-256/-512).
        auth_key: SNMPv3 authentication passphrase.
        priv_protocol: ``aes`` (AES-128) or ``aes256`` (AES-256, Reeder key extension).
        priv_key: SNMPv3 privacy passphrase.
        context: SNMPv3 context name ("" for most printers).
        timeout_s: Seconds to wait for one response before a retry.
        retries: Retries of one request.
        budget_s: Time bound of a whole poll.
        expected_serial: The serial registered for this device, if known.
    """

    host: str
    port: int = 161
    version: SnmpVersion = "2c"
    community: str = field(default="", repr=False)
    user: str = ""
    auth_protocol: str = "sha256"
    auth_key: str = field(default="", repr=False)
    priv_protocol: str = "aes"
    priv_key: str = field(default="", repr=False)
    context: str = ""
    timeout_s: float = 1.0
    retries: int = 1
    budget_s: float = 4.0
    expected_serial: str | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if not self.host or any(c.isspace() for c in self.host):
            return "host: must be a host name or address"
        if not 0 < self.port < 65536:
            return "port: must be 1-65535"
        if self.version not in ("2c", "3"):
            return "snmp_version: must be 2c or 3"
        if self.version == "2c" and not self.community:
            return "snmp_community: required with snmp_version 2c"
        if self.version == "3":
            if not self.user:
                return "snmp_user: required with snmp_version 3"
            if self.auth_protocol not in AUTH_PROTOCOLS:
                return f"snmp_auth_protocol: must be one of {', '.join(AUTH_PROTOCOLS)}"
            if self.priv_protocol not in PRIV_PROTOCOLS:
                return f"snmp_priv_protocol: must be one of {', '.join(PRIV_PROTOCOLS)}"
            # RFC 3414: a passphrase shorter than 8 characters is refused by agents.
            if len(self.auth_key) < 8:
                return "snmp_auth_key: at least 8 characters (authPriv)"
            if len(self.priv_key) < 8:
                return "snmp_priv_key: at least 8 characters (authPriv)"
        if self.timeout_s <= 0 or self.budget_s <= 0 or self.retries < 0:
            return "snmp_timeout_s, snmp_retries: must be positive"
        return None

    @classmethod
    def from_config(
        cls,
        table: Mapping[str, Any],
        where: str = "[agent.snmp]",
        *,
        other_keys: Collection[str] = (),
    ) -> SnmpTarget:
        """A target from a configuration table (``[agent.snmp]`` or one ``[[agent.devices]]``).

        ``host`` defaults to 127.0.0.1 (the agent on the MFP's own controller).

        Args:
            table: The table's keys (:data:`TARGET_KEYS`).
            where: How the table is named in error messages.
            other_keys: Keys the caller reads itself (``id``, ``profile``); any
                other unknown key is an error (a misspelt ``snmp_comunity``).

        Raises:
            ConfigError: naming the bad key, never echoing a value.
        """
        for key in table:
            if key not in TARGET_KEYS and key not in other_keys:
                msg = f"{where} {key}: unknown key (known: {', '.join(TARGET_KEYS)})"
                raise ConfigError(msg)

        def text(key: str, default: str = "") -> str:
            value = table.get(key, default)
            if not isinstance(value, str):
                msg = f"{where} {key}: must be a string"
                raise ConfigError(msg)
            return value

        def number(key: str, default: float) -> float:
            value = table.get(key, default)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = None
            if not isinstance(value, int | float) or isinstance(value, bool):
                msg = f"{where} {key}: must be a number"
                raise ConfigError(msg)
            return float(value)

        port = number("port", 161)
        retries = number("snmp_retries", 1)
        if port != int(port) or retries != int(retries):
            msg = f"{where} port, snmp_retries: must be integers"
            raise ConfigError(msg)
        expected = table.get("expected_serial")
        try:
            return cls(
                host=text("host", "127.0.0.1").strip(),
                port=int(port),
                version=text("snmp_version", "2c").strip().lower(),  # type: ignore[arg-type]
                community=text("snmp_community"),
                user=text("snmp_user"),
                auth_protocol=text("snmp_auth_protocol", "sha256").strip().lower(),
                auth_key=text("snmp_auth_key"),
                priv_protocol=text("snmp_priv_protocol", "aes").strip().lower(),
                priv_key=text("snmp_priv_key"),
                context=text("snmp_context"),
                timeout_s=number("snmp_timeout_s", 1.0),
                retries=int(retries),
                expected_serial=text("expected_serial") if expected is not None else None,
            )
        except ValueError as exc:
            msg = f"{where} {exc}"
            raise ConfigError(msg) from None


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
        identity = self._identity is None or self._polls % IDENTITY_EVERY == 0
        columns = [
            column
            for group, members in COLUMN_GROUPS
            if identity or group != "identity"
            for column in members
        ]
        # Batches of columns in one GETBULK each, the batches at once (see _batches).
        ordered = _batches(columns, self._rows)
        scalars: list[tuple[int, ...]] = [SYS_DESCR[:-1], SYS_NAME[:-1]] if identity else []
        results = await asyncio.gather(
            *(
                self._walk_columns(
                    auth,
                    context,
                    scalars if number == 0 else [],
                    [oid for _key, _col, oid in batch],
                    [self._rows.get(oid) for _key, _col, oid in batch],
                )
                for number, batch in enumerate(ordered)
            )
        )
        tables: dict[str, Any] = {} if identity else dict(self._identity or {})
        for number, (batch, (found_scalars, found_rows)) in enumerate(
            zip(ordered, results, strict=True)
        ):
            if identity and number == 0:
                tables["sys_descr"] = found_scalars.get(SYS_DESCR)
                tables["sys_name"] = found_scalars.get(SYS_NAME)
            for (key, col, oid), found in zip(batch, found_rows, strict=True):
                self._rows[oid] = len(found)
                if col is None:
                    tables[key] = found
                else:
                    tables.setdefault(key, {})[col] = found
        if identity:
            self._identity = {key: tables.get(key) for key in IDENTITY_KEYS}
        self._polls += 1
        return tables

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


# --- interpretation: pure functions of what was read (unit-testable without SNMP) ---


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
