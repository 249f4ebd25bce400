"""Predefined diagnostics the session page offers, per device type.

Each runs once through ``POST /api/v1/sessions/{id}/exec`` (audited like any
exec); the operator sees its output without typing into the shell.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.web.texts import N_


@dataclass(frozen=True)
class Diagnostic:
    """A named command and what it tells the operator (name and purpose marked for the
    catalogs, translated where the session page shows them)."""

    name: str
    command: str
    purpose: str


_COMMON = (
    Diagnostic(N_("Uptime and load"), "uptime", N_("how long since boot, load averages")),
    Diagnostic(N_("Disk space"), "df -h", N_("full disks stop spoolers, archives and databases")),
    Diagnostic(N_("Memory"), "free -m", N_("memory and swap in MiB")),
    Diagnostic(N_("Top processes"), "ps aux --sort=-%cpu | head -n 15", N_("what uses the CPU")),
)

DIAGNOSTICS: dict[str, tuple[Diagnostic, ...]] = {
    "mfp": (
        *_COMMON,
        Diagnostic(N_("Print queues"), "lpstat -t", N_("CUPS queues and stuck jobs")),
    ),
    "imaging": (
        *_COMMON,
        Diagnostic(
            N_("Failed services"), "systemctl --failed --no-pager", N_("units that did not start")
        ),
        Diagnostic(
            N_("Network"), "ip -brief address", N_("interfaces and addresses (PACS, worklist)")
        ),
    ),
    "server": (
        *_COMMON,
        Diagnostic(
            N_("Failed services"), "systemctl --failed --no-pager", N_("units that did not start")
        ),
        Diagnostic(
            N_("Recent errors"),
            "journalctl -p err -n 30 --no-pager",
            N_("the last errors in the journal"),
        ),
    ),
}


def diagnostics_for(device_type: str) -> tuple[Diagnostic, ...]:
    """The diagnostics of a device type (the common ones for an unknown type)."""
    return DIAGNOSTICS.get(device_type, _COMMON)
