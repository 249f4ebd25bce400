"""Numbers of RFC 3805 Printer-MIB and RFC 2790 Host Resources MIB that a poll reads.

Numeric OIDs, table columns, alert codes and error-state bits (no MIB is compiled
or loaded at run time), and :data:`COLUMN_GROUPS`, the columns one poll walks.
Data only: :mod:`agent.health.collectors.snmp` reads them,
:mod:`agent.health.collectors.printer_reading` interprets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

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
#: The groups in :data:`STATIC_GROUPS` change only when the printer's make-up does (a
#: supply or tray fitted or removed): they are read with the identity (the first poll,
#: after an outage, hourly) and whenever a table's rows differ from those of that read
#: (:data:`ROWS_OF`); the others (levels, counters, alerts, error bits, serial) every poll.
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
        "static",
        (
            ("colorant", None, PRT_COLORANT_VALUE),
            ("input", INPUT_MAX, (*PRT_INPUT, INPUT_MAX)),
            ("marker", MARKER_COUNTER_UNIT, (*PRT_MARKER, MARKER_COUNTER_UNIT)),
            *(
                ("supplies", c, (*PRT_SUPPLIES, c))
                for c in (SUPPLY_COLORANT, SUPPLY_CLASS, SUPPLY_TYPE, SUPPLY_MAX)
            ),
        ),
    ),
    (
        "state",
        (
            ("hr_error", None, HR_PRINTER_ERROR_STATE),
            ("serial", None, PRT_SERIAL),
        ),
    ),
    ("input", (("input", INPUT_LEVEL, (*PRT_INPUT, INPUT_LEVEL)),)),
    ("marker", (("marker", MARKER_LIFE_COUNT, (*PRT_MARKER, MARKER_LIFE_COUNT)),)),
    ("supplies", (("supplies", SUPPLY_LEVEL, (*PRT_SUPPLIES, SUPPLY_LEVEL)),)),
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
#: Groups read with the identity, not at every poll (see :data:`COLUMN_GROUPS`).
STATIC_GROUPS: Final = frozenset({"identity", "static"})
#: For each table with static columns, the column read every poll whose rows (indexes)
#: must be those of the last static read, else the static columns are read again.
ROWS_OF: Final[Mapping[str, int]] = {
    "input": INPUT_LEVEL,
    "marker": MARKER_LIFE_COUNT,
    "supplies": SUPPLY_LEVEL,
}
