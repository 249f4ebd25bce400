"""Predefined diagnostics the session page offers, per device type.

Each runs once through ``POST /api/v1/sessions/{id}/exec`` (audited like any
exec); the operator sees its output without typing into the shell.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """A named command and what it tells the operator."""

    name: str
    command: str
    purpose: str


_COMMON = (
    Diagnostic("Uptime and load", "uptime", "how long since boot, load averages"),
    Diagnostic("Disk space", "df -h", "full disks stop spoolers, archives and databases"),
    Diagnostic("Memory", "free -m", "memory and swap in MiB"),
    Diagnostic("Top processes", "ps aux --sort=-%cpu | head -n 15", "what uses the CPU"),
)

DIAGNOSTICS: dict[str, tuple[Diagnostic, ...]] = {
    "mfp": (
        *_COMMON,
        Diagnostic("Print queues", "lpstat -t", "CUPS queues and stuck jobs"),
    ),
    "imaging": (
        *_COMMON,
        Diagnostic("Failed services", "systemctl --failed --no-pager", "units that did not start"),
        Diagnostic("Network", "ip -brief address", "interfaces and addresses (PACS, worklist)"),
    ),
    "server": (
        *_COMMON,
        Diagnostic("Failed services", "systemctl --failed --no-pager", "units that did not start"),
        Diagnostic(
            "Recent errors", "journalctl -p err -n 30 --no-pager", "the last errors in the journal"
        ),
    ),
}


def diagnostics_for(device_type: str) -> tuple[Diagnostic, ...]:
    """The diagnostics of a device type (the common ones for an unknown type)."""
    return DIAGNOSTICS.get(device_type, _COMMON)
