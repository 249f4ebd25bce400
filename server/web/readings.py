"""Health metrics as a person reads them: a label, a value with its unit, a bar for a percentage.

Agents report raw names and numbers (``mfp.toner_black_percent: 62.0``, ``uptime_s: 1049000``,
``imaging.dicom_peer_up:pacs: 1.0``); the console shows ``Toner black 62 %``, ``Uptime 12 d 3 h``,
``PACS reachable yes``, the raw name on hover. The device type's own metrics come first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Whole labels for well-known names (prefix and suffix already split off).
_LABELS = {
    "cpu_percent": "CPU",
    "mem_percent": "Memory",
    "disk_percent": "Disk",
    "uptime_s": "Uptime",
    "load1": "Load (1 min)",
    "load5": "Load (5 min)",
    "load15": "Load (15 min)",
    "net_errors_in": "Network errors in",
    "net_errors_out": "Network errors out",
    "net_drops_in": "Network drops in",
    "net_drops_out": "Network drops out",
    "temp_c": "Temperature",
    "pages_total": "Pages printed",
    "paper_jams_total": "Paper jams",
    "jammed": "Paper jammed",
    "supply_percent": "Supply",
    "cache_disk_percent": "Image cache disk",
    "studies_total": "Studies",
    "dicom_peer_up": "reachable",
    "dicom_echo_ms": "DICOM echo",
    "service_up": "running",
    "disk_data_percent": "Data disk",
    "raid_arrays": "RAID arrays",
    "raid_degraded": "RAID degraded",
    "raid_sync_percent": "RAID sync",
    "smart_ok": "SMART ok",
    "smart_reallocated_sectors": "Reallocated sectors",
    "smart_pending_sectors": "Pending sectors",
    "smart_temperature_c": "Disk temperature",
    "smart_life_used_percent": "Disk life used",
}
#: Names whose suffix (after ``:``) comes first: ``PACS reachable``, ``sshd running``.
_SUFFIX_FIRST = frozenset({"dicom_peer_up", "service_up"})
#: Well-known peers and services in capitals.
_UPPER = frozenset({"pacs", "ris", "his", "dicom", "smb", "nfs", "ntp", "vnc", "web"})
_TONER = re.compile(r"^toner_(?P<color>[a-z]+)_percent$")
_TRAY = re.compile(r"^paper_tray(?P<n>\d+)_percent$")


@dataclass(frozen=True)
class Reading:
    """One metric as the device page shows it."""

    name: str
    label: str
    text: str
    #: 0-100 when the value is a percentage (drawn as a bar).
    percent: float | None = None
    #: ``good``/``bad`` for yes/no readings, else "".
    tone: str = ""


def _words(raw: str) -> str:
    text = raw.replace("_", " ").strip()
    return " ".join(w.upper() if w in _UPPER else w for w in text.split())


def _split(name: str) -> tuple[str, str, str]:
    """``mfp.supply_percent:drum`` → (``mfp``, ``supply_percent``, ``drum``)."""
    base, _, suffix = name.partition(":")
    prefix, _, stem = base.rpartition(".")
    return prefix, stem, suffix


def label(name: str) -> str:
    """The readable label of a raw metric name."""
    _, stem, suffix = _split(name)
    if toner := _TONER.match(stem):
        return f"Toner {toner['color']}"
    if tray := _TRAY.match(stem):
        return f"Paper tray {tray['n']}"
    words = _LABELS.get(stem)
    if words is None:
        words = _words(stem.removesuffix("_percent").removesuffix("_total")).capitalize()
    if not suffix:
        return words
    if stem in _SUFFIX_FIRST:
        return f"{_words(suffix)} {words}"
    if stem == "disk_percent" or stem == "smart_ok":
        return f"{words} {suffix.replace('_', '/') if stem == 'disk_percent' else suffix}"
    return f"{words} {_words(suffix)}"


def duration(seconds: float) -> str:
    """``12 d 3 h``, ``5 h 20 min``, ``4 min``: the two largest units."""
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{total} s"


def size(value: float) -> str:
    """Bytes in binary units: ``512 B``, ``3.4 MiB``, ``1.2 GiB``."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    raise AssertionError  # pragma: no cover


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def reading(name: str, value: Any) -> Reading:
    """A raw metric as the page shows it."""
    title = label(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return Reading(name, title, str(value))
    _, stem, _ = _split(name)
    number = float(value)
    if stem in ("dicom_peer_up", "service_up", "smart_ok"):
        return Reading(name, title, "yes" if number else "no", tone="good" if number else "bad")
    if stem in ("raid_degraded", "jammed"):
        return Reading(name, title, "yes" if number else "no", tone="bad" if number else "good")
    if stem.endswith("_percent"):
        shown = f"{number:.0f} %" if number >= 10 or number == 0 else f"{number:.1f} %"
        return Reading(name, title, shown, percent=min(100.0, max(0.0, number)))
    if stem == "uptime_s" or stem.endswith("_seconds"):
        return Reading(name, title, duration(number))
    if stem.endswith("_bytes"):
        return Reading(name, title, size(number))
    if stem.endswith("_ms"):
        return Reading(name, title, f"{_number(number)} ms")
    if stem == "temp_c" or stem.endswith("temperature_c") or stem.endswith("_celsius"):
        return Reading(name, title, f"{number:.1f} °C")
    return Reading(name, title, _number(number))


def readings(device_type: str, health: dict[str, Any] | None) -> list[Reading]:
    """A device's latest metrics: its type's own first (``mfp.*`` on a printer), each group
    in the order of its labels."""
    own = f"{device_type}."
    rows = [reading(name, value) for name, value in (health or {}).items()]
    return sorted(rows, key=lambda r: (not r.name.startswith(own), r.label.lower(), r.name))
