"""What ``smartctl --json -a`` (smartmontools 7+) says of a disk: ATA, SCSI or NVMe.

The server profile (:mod:`agent.health.profiles.server`) runs smartctl; this
module reads its JSON answer into a :class:`SmartReport`, and names disks in
metric names (:func:`disk_label`). Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# smartctl's exit status bits (smartctl(8), RETURN VALUES).
_EXIT_PARSE_FAILED: Final = 1 << 0
_EXIT_OPEN_FAILED: Final = 1 << 1
_EXIT_COMMAND_FAILED: Final = 1 << 2


@dataclass(frozen=True, slots=True)
class SmartReport:
    """What ``smartctl --json -a`` says of one disk.

    Attributes:
        disk: The label used in metric names (``sda``, ``nvme0n1``).
        passed: The overall health self-assessment (``None``: not read).
        temperature_c: Current temperature.
        reallocated: ATA attribute 5 (raw), or SCSI grown defects.
        pending: ATA attribute 197 (raw).
        media_errors: NVMe media and data integrity errors.
        life_used_percent: NVMe "percentage used" (may exceed 100).
        standby: The disk was asleep and left so.
        error: Why the disk could not be read (``None``: it was).
    """

    disk: str
    passed: bool | None = None
    temperature_c: float | None = None
    reallocated: int | None = None
    pending: int | None = None
    media_errors: int | None = None
    life_used_percent: float | None = None
    standby: bool = False
    error: str | None = None


def disk_label(device: str) -> str:
    """``/dev/sda`` -> ``sda``; ``/dev/disk/by-id/ata-X`` -> ``ata-X``; lower case, safe."""
    label = device.rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9_.-]", "_", label)[:40] or "disk"


def json_get(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or ``None`` where the JSON does not have that shape."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ata_raw(report: Mapping[str, Any], attribute_id: int) -> int | None:
    table = json_get(report, "ata_smart_attributes", "table")
    for row in table if isinstance(table, list) else []:
        if isinstance(row, Mapping) and row.get("id") == attribute_id:
            value = _int(json_get(row, "raw", "value"))
            if value is not None:
                # Some vendors pack more into the 48-bit raw value; the count is the low word.
                return value & 0xFFFF if attribute_id in (5, 197) and value > 0xFFFF else value
    return None


def parse_smartctl(report: Mapping[str, Any], device: str) -> SmartReport:
    """Read one ``smartctl --json -a`` answer (ATA, SCSI or NVMe)."""
    label = disk_label(device)
    exit_status = _int(json_get(report, "smartctl", "exit_status")) or 0
    listed = json_get(report, "smartctl", "messages")
    messages = [
        str(m.get("string", ""))[:200]
        for m in (listed if isinstance(listed, list) else [])
        if isinstance(m, Mapping)
    ]
    if exit_status & (_EXIT_PARSE_FAILED | _EXIT_OPEN_FAILED):
        text = "; ".join(messages) or "device open failed"
        if "STANDBY" in text.upper() or "SLEEP" in text.upper():
            return SmartReport(label, standby=True)
        return SmartReport(label, error=text)
    passed = json_get(report, "smart_status", "passed")
    if not isinstance(passed, bool):
        passed = None
    if passed is None and exit_status & _EXIT_COMMAND_FAILED:
        return SmartReport(label, error="; ".join(messages) or "SMART command failed")
    nvme = "nvme_smart_health_information_log"
    reallocated = _ata_raw(report, 5)
    if reallocated is None:
        reallocated = _int(json_get(report, "scsi_grown_defect_list"))
    return SmartReport(
        label,
        passed=passed,
        temperature_c=_number(json_get(report, "temperature", "current")),
        reallocated=reallocated,
        pending=_ata_raw(report, 197),
        media_errors=_int(json_get(report, nvme, "media_errors")),
        life_used_percent=_number(json_get(report, nvme, "percentage_used")),
    )
