"""Health metrics as a person reads them: a label, a value with its unit, a bar for a percentage.

Agents report raw names and numbers (``mfp.toner_black_percent: 62.0``, ``uptime_s: 1049000``,
``imaging.dicom_peer_up:pacs: 1.0``); the console shows ``Toner black 62 %``, ``Uptime 12 d 3 h``,
``PACS reachable yes``, the raw name on hover. The device type's own metrics come first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import i18n
from server.web.texts import N_

_LOCALE_DIR = Path(__file__).parent / "locale"


def gettext(message: str) -> str:
    """``message`` in the language of the page being rendered (English outside a page)."""
    return i18n.catalog(_LOCALE_DIR, "messages", i18n.current()).gettext(message)


#: Toner colours as the labels name them.
_COLOURS = {
    "black": N_("black"),
    "cyan": N_("cyan"),
    "magenta": N_("magenta"),
    "yellow": N_("yellow"),
}
#: Whole labels for well-known names (prefix and suffix already split off).
_LABELS = {
    "cpu_percent": N_("CPU"),
    "mem_percent": N_("Memory"),
    "disk_percent": N_("Disk"),
    "uptime_s": N_("Uptime"),
    "load1": N_("Load (1 min)"),
    "load5": N_("Load (5 min)"),
    "load15": N_("Load (15 min)"),
    "net_errors_in": N_("Network errors in"),
    "net_errors_out": N_("Network errors out"),
    "net_drops_in": N_("Network drops in"),
    "net_drops_out": N_("Network drops out"),
    "temp_c": N_("Temperature"),
    "pages_total": N_("Pages printed"),
    "paper_jams_total": N_("Paper jams"),
    "jammed": N_("Paper jammed"),
    "supply_percent": N_("Supply"),
    "cache_disk_percent": N_("Image cache disk"),
    "studies_total": N_("Studies"),
    "dicom_peer_up": N_("reachable"),
    "dicom_echo_ms": N_("DICOM echo"),
    "service_up": N_("running"),
    "disk_data_percent": N_("Data disk"),
    "raid_arrays": N_("RAID arrays"),
    "raid_degraded": N_("RAID degraded"),
    "raid_sync_percent": N_("RAID sync"),
    "smart_ok": N_("SMART ok"),
    "smart_reallocated_sectors": N_("Reallocated sectors"),
    "smart_pending_sectors": N_("Pending sectors"),
    "smart_temperature_c": N_("Disk temperature"),
    "smart_life_used_percent": N_("Disk life used"),
}
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
    #: The value as reported.
    value: Any = None


def _words(raw: str) -> str:
    text = raw.replace("_", " ").strip()
    return " ".join(w.upper() if w in _UPPER else w for w in text.split())


def _split(name: str) -> tuple[str, str, str]:
    """``mfp.supply_percent:drum`` → (``mfp``, ``supply_percent``, ``drum``)."""
    base, _, suffix = name.partition(":")
    prefix, _, stem = base.rpartition(".")
    return prefix, stem, suffix


def label(name: str) -> str:
    """The readable label of a raw metric name, in the page's language (English outside a
    page); the device's own words (an unknown name, a peer, a disk) stay as they are."""
    _, stem, suffix = _split(name)
    if toner := _TONER.match(stem):
        colour = toner["color"]
        colour = gettext(_COLOURS[colour]) if colour in _COLOURS else colour
        return gettext("Toner %(colour)s") % {"colour": colour}
    if tray := _TRAY.match(stem):
        return gettext("Paper tray %(number)s") % {"number": tray["n"]}
    known = _LABELS.get(stem)
    if known is None:
        words = _words(stem.removesuffix("_percent").removesuffix("_total")).capitalize()
    else:
        words = gettext(known)
    if not suffix:
        return words
    if stem == "dicom_peer_up":
        return gettext("%(peer)s reachable") % {"peer": _words(suffix)}
    if stem == "service_up":
        return gettext("%(service)s running") % {"service": _words(suffix)}
    if stem == "disk_percent" or stem == "smart_ok":
        return f"{words} {suffix.replace('_', '/') if stem == 'disk_percent' else suffix}"
    return f"{words} {_words(suffix)}"


def duration(seconds: float) -> str:
    """``12 d 3 h``, ``5 h 20 min``, ``4 min``: the two largest units, the reader's way."""
    return i18n.format_duration(seconds)


def size(value: float) -> str:
    """Bytes in binary units: ``512 B``, ``3.4 MiB``, ``1.2 GiB``."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{i18n.format_number(amount, 0 if unit == 'B' else 1)} {unit}"
        amount /= 1024
    raise AssertionError  # pragma: no cover


def _number(value: float) -> str:
    """A number with the reader's digit grouping and decimal sign (``123,456`` in English,
    ``123 456`` in French)."""
    if float(value).is_integer():
        return i18n.format_number(int(value))
    return i18n.format_number(value, 1 if abs(value) >= 10 else 2)


def reading(name: str, value: Any) -> Reading:
    """A raw metric as the page shows it."""
    title = label(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return Reading(name, title, str(value), value=value)
    _, stem, _ = _split(name)
    number = float(value)
    yes, no = gettext("yes"), gettext("no")
    if stem in ("dicom_peer_up", "service_up", "smart_ok"):
        return Reading(
            name, title, yes if number else no, tone="good" if number else "bad", value=value
        )
    if stem in ("raid_degraded", "jammed"):
        return Reading(
            name, title, yes if number else no, tone="bad" if number else "good", value=value
        )
    if stem.endswith("_percent"):
        digits = 0 if number >= 10 or number == 0 else 1
        shown = f"{i18n.format_number(number, digits)} %"
        return Reading(name, title, shown, percent=min(100.0, max(0.0, number)), value=value)
    if stem == "uptime_s" or stem.endswith("_seconds"):
        return Reading(name, title, duration(number), value=value)
    if stem.endswith("_bytes"):
        return Reading(name, title, size(number), value=value)
    if stem.endswith("_ms"):
        return Reading(name, title, f"{_number(number)} ms", value=value)
    if stem == "temp_c" or stem.endswith("temperature_c") or stem.endswith("_celsius"):
        return Reading(name, title, f"{i18n.format_number(number, 1)} °C", value=value)
    return Reading(name, title, _number(number), value=value)


def readings(device_type: str, health: dict[str, Any] | None) -> list[Reading]:
    """A device's latest metrics: its type's own first (``mfp.*`` on a printer), each group
    in the order of its labels."""
    own = f"{device_type}."
    rows = [reading(name, value) for name, value in (health or {}).items()]
    return sorted(rows, key=lambda r: (not r.name.startswith(own), r.label.lower(), r.name))


@dataclass(frozen=True)
class DeviceReadings:
    """A device's :func:`readings` for a page, built when the page iterates them: once,
    in the language of the page being rendered (a route runs outside that language)."""

    device_type: str
    health: dict[str, Any] | None

    def __iter__(self) -> Iterator[Reading]:
        return iter(readings(self.device_type, self.health))
