"""The server's real profile: systemd units, Linux software RAID, SMART of its disks.

- Units: ``systemctl show`` of the configured units, where systemd runs
  (``/run/systemd/system`` exists, as ``sd_booted()`` checks); a unit is up
  while its ``ActiveState`` is ``active`` or ``reloading``.
- RAID: ``/proc/mdstat`` (read by :mod:`agent.health.profiles.mdstat`); an array
  is degraded when fewer members are up than it has slots (``[2/1] [U_]``), or
  when it is inactive.
- SMART: ``smartctl --json -a`` (smartmontools 7+, read by
  :mod:`agent.health.profiles.smartctl`) of the configured disks, or
  of those ``smartctl --scan`` finds; disks asleep are left asleep
  (``--nocheck=standby``) and SMART is read at most every
  :data:`SMART_INTERVAL_S` seconds (the values move slowly; each read costs
  disk commands).

Metrics: ``server.service_up:<unit>``, ``server.raid_arrays``,
``server.raid_degraded`` (count of degraded arrays),
``server.raid_sync_percent:<md>`` (while resyncing or rebuilding),
``server.smart_ok:<disk>``, ``server.smart_temperature_c:<disk>``,
``server.smart_reallocated_sectors:<disk>``, ``server.smart_pending_sectors:<disk>``,
``server.smart_media_errors:<disk>`` and ``server.smart_life_used_percent:<disk>`` (NVMe).
Faults: ``SVC-DOWN-<UNIT>`` (error), ``RAID-DEGRADED-<MD>`` (critical),
``SMART-FAIL-<DISK>`` (critical), ``SMART-REALLOC-<DISK>`` and
``SMART-PENDING-<DISK>`` (warning), ``SMART-UNAVAILABLE-<DISK>`` (warning).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from agent.health.collectors.base import Reading
from agent.health.profiles.base import ProfileOptions
from agent.health.profiles.mdstat import parse_mdstat
from agent.health.profiles.smartctl import SmartReport, disk_label, json_get, parse_smartctl
from shared.errors import ConfigError
from shared.wire import FaultReport

logger = logging.getLogger(__name__)

SMART_INTERVAL_S: Final = 300.0
#: Reallocated sectors from which a disk is reported (a few are common and harmless).
REALLOC_WARN: Final = 50
COMMAND_TIMEOUT_S: Final = 4.0
#: A systemd unit name (systemd.unit(5)); never starting with '-', so never an option.
_UNIT_RE: Final = re.compile(r"^[A-Za-z0-9:_.@\\][A-Za-z0-9:_.@\\-]{0,47}$")
#: A disk as smartctl names it: a device path, optionally with its ``-d`` type.
_DISK_RE: Final = re.compile(r"^/dev/[A-Za-z0-9/_.-]{1,64}$")
_SMARTCTL_DIRS: Final = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_UP_STATES: Final = ("active", "reloading")


# --- systemctl show ------------------------------------------------------------------------------


def parse_systemctl_show(text: str) -> list[dict[str, str]]:
    """The property blocks of ``systemctl show UNIT...``, one per unit in argument order."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


# --- the profile ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerTargets:
    """What the server profile watches, checked from the agent's configuration.

    Attributes:
        units: ``systemd_units``: units reported as ``server.service_up:<unit>``.
        smart_disks: ``smart_disks``: devices to read SMART of (empty: ``smartctl --scan``).
        smart: ``smart``: read SMART at all (``false``: never run smartctl).
        mdstat_path: Where the md driver's status is (tests point it to a fixture).
        systemd_dir: Present when systemd runs (``sd_booted()``).
        systemctl: The ``systemctl`` to run.
        smartctl: The ``smartctl`` to run (``None``: found on the PATH or in the sbin dirs).
    """

    units: tuple[str, ...] = ()
    smart_disks: tuple[str, ...] = ()
    smart: bool = True
    mdstat_path: Path = Path("/proc/mdstat")
    systemd_dir: Path = Path("/run/systemd/system")
    systemctl: str = "systemctl"
    smartctl: str | None = None

    @classmethod
    def parse(cls, targets: Mapping[str, Any]) -> ServerTargets:
        """Check ``systemd_units`` and ``smart_disks``.

        Raises:
            ConfigError: naming the first bad key.
        """
        units = targets.get("systemd_units") or ()
        if not isinstance(units, list | tuple) or not all(
            isinstance(u, str) and _UNIT_RE.match(u) for u in units
        ):
            msg = "[agent] systemd_units: must be a list of unit names (sshd.service, postgresql)"
            raise ConfigError(msg)
        disks = targets.get("smart_disks") or ()
        if not isinstance(disks, list | tuple) or not all(
            isinstance(d, str) and _DISK_RE.match(d) for d in disks
        ):
            msg = "[agent] smart_disks: must be a list of device paths (/dev/sda)"
            raise ConfigError(msg)
        extra = {k: targets[k] for k in ("mdstat_path", "systemd_dir") if k in targets}
        return cls(
            units=tuple(dict.fromkeys(units)),
            smart_disks=tuple(dict.fromkeys(disks)),
            smart=bool(targets.get("smart", True)),
            systemctl=str(targets.get("systemctl", "systemctl")),
            smartctl=targets.get("smartctl"),
            **{k: Path(v) for k, v in extra.items()},
        )


async def _run(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run a command without a shell; its exit status and standard output."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")


def _fault(
    code: str, severity: Literal["warning", "error", "critical"], message: str
) -> FaultReport:
    return {"code": code[:64], "severity": severity, "message": message[:1024]}


def _unit_code(unit: str) -> str:
    return unit.removesuffix(".service").upper()


@dataclass(slots=True)
class _SmartCache:
    at: float = -1e18
    metrics: dict[str, float] = field(default_factory=dict)
    faults: list[FaultReport] = field(default_factory=list)


class ServerProfile:
    """The real server: systemd units, md RAID, SMART."""

    name = "server"

    def __init__(self, options: ProfileOptions) -> None:
        self.targets = ServerTargets.parse(options.targets)
        self._smartctl = self.targets.smartctl or _find_smartctl()
        self._smart = _SmartCache()
        self._told: set[str] = set()

    async def collect(self) -> Reading:
        """Units, RAID and (every :data:`SMART_INTERVAL_S` s) SMART."""
        reading = Reading()
        if self.targets.units:
            await self._collect_units(reading)
        await asyncio.to_thread(self._collect_raid, reading)
        if self.targets.smart and self._smartctl is not None:
            if time.monotonic() - self._smart.at >= SMART_INTERVAL_S:
                await self._collect_smart()
            reading.metrics.update(self._smart.metrics)
            reading.faults.extend(self._smart.faults)
        return reading

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._told:
            self._told.add(key)
            logger.warning(message, *args)

    async def _collect_units(self, reading: Reading) -> None:
        if not self.targets.systemd_dir.is_dir():
            self._once("systemd", "systemd does not run here: systemd_units are not reported")
            return
        units = self.targets.units
        argv = [
            self.targets.systemctl,
            "show",
            "--property=Id,LoadState,ActiveState,SubState",
            "--",
            *units,
        ]
        try:
            _, out = await _run(argv, COMMAND_TIMEOUT_S)
        except OSError as exc:
            self._once("systemctl", "cannot run systemctl: %s", exc)
            return
        blocks = parse_systemctl_show(out)
        if len(blocks) != len(units):
            logger.warning(
                "systemctl show answered %d blocks for %d units", len(blocks), len(units)
            )
            return
        for unit, props in zip(units, blocks, strict=True):
            state = props.get("ActiveState", "unknown")
            up = state in _UP_STATES
            reading.metrics[f"server.service_up:{unit}"] = 1.0 if up else 0.0
            if not up:
                if props.get("LoadState") == "not-found":
                    why = "unit not found"
                else:
                    why = f"{state} ({props.get('SubState', '?')})"
                reading.faults.append(
                    _fault(f"SVC-DOWN-{_unit_code(unit)}", "error", f"service {unit}: {why}")
                )

    def _collect_raid(self, reading: Reading) -> None:
        try:
            text = self.targets.mdstat_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return  # no md driver loaded: no software RAID
        except OSError as exc:
            self._once("mdstat", "cannot read %s: %s", self.targets.mdstat_path, exc)
            return
        arrays = parse_mdstat(text)
        degraded = [a for a in arrays if a.degraded]
        reading.metrics["server.raid_arrays"] = float(len(arrays))
        reading.metrics["server.raid_degraded"] = float(len(degraded))
        for array in arrays:
            if array.sync_percent is not None:
                reading.metrics[f"server.raid_sync_percent:{array.name}"] = array.sync_percent
        for array in degraded:
            if not array.active:
                what = "inactive"
            else:
                what = f"degraded: {array.up} of {array.slots} members up [{array.members_map}]"
                if array.failed:
                    what += f", {array.failed} failed"
                if array.sync_action in ("recovery", "reshape"):
                    what += f", {array.sync_action} {array.sync_percent:g}%"
            reading.faults.append(
                _fault(
                    f"RAID-DEGRADED-{array.name.upper()}",
                    "critical",
                    f"RAID array {array.name} ({array.level or 'unknown level'}) {what}",
                )
            )

    async def _collect_smart(self) -> None:
        assert self._smartctl is not None  # noqa: S101 - checked by the caller
        cache = _SmartCache(at=time.monotonic())
        disks: list[tuple[str, str | None]] = [(d, None) for d in self.targets.smart_disks]
        if not disks:
            disks = await self._scan()
        for device, kind in disks:
            argv = [self._smartctl, "--json", "-a", "--nocheck=standby"]
            if kind:
                argv += ["-d", kind]
            argv += ["--", device]
            try:
                _, out = await _run(argv, COMMAND_TIMEOUT_S)
                report = parse_smartctl(json.loads(out), device)
            except (OSError, ValueError, TimeoutError, AttributeError) as exc:
                report = SmartReport(disk_label(device), error=f"smartctl gave no answer ({exc})")
            _smart_into(report, cache)
        self._smart = cache

    async def _scan(self) -> list[tuple[str, str | None]]:
        assert self._smartctl is not None  # noqa: S101 - checked by the caller
        try:
            _, out = await _run([self._smartctl, "--scan", "--json"], COMMAND_TIMEOUT_S)
            found = json_get(json.loads(out), "devices") or []
        except (OSError, ValueError, TimeoutError, AttributeError) as exc:
            self._once("scan", "smartctl --scan failed: %s", exc)
            return []
        return [
            (d["name"], d.get("type"))
            for d in found
            if isinstance(d, Mapping) and isinstance(d.get("name"), str)
        ]


def _smart_into(report: SmartReport, cache: _SmartCache) -> None:
    disk, code = report.disk, report.disk.upper()
    if report.standby:
        return
    if report.error is not None:
        cache.faults.append(
            _fault(f"SMART-UNAVAILABLE-{code}", "warning", f"SMART of {disk}: {report.error}")
        )
        return
    values = {
        "smart_temperature_c": report.temperature_c,
        "smart_reallocated_sectors": report.reallocated,
        "smart_pending_sectors": report.pending,
        "smart_media_errors": report.media_errors,
        "smart_life_used_percent": report.life_used_percent,
    }
    if report.passed is not None:
        cache.metrics[f"server.smart_ok:{disk}"] = 1.0 if report.passed else 0.0
    for name, value in values.items():
        if value is not None:
            cache.metrics[f"server.{name}:{disk}"] = float(value)
    if report.passed is False:
        cache.faults.append(
            _fault(
                f"SMART-FAIL-{code}",
                "critical",
                f"disk {disk} fails its SMART health self-assessment: replace it",
            )
        )
    if report.reallocated is not None and report.reallocated >= REALLOC_WARN:
        cache.faults.append(
            _fault(
                f"SMART-REALLOC-{code}",
                "warning",
                f"{report.reallocated} reallocated sectors on {disk}",
            )
        )
    if report.pending:
        cache.faults.append(
            _fault(
                f"SMART-PENDING-{code}",
                "warning",
                f"{report.pending} sectors pending reallocation on {disk}",
            )
        )


def _find_smartctl() -> str | None:
    found = shutil.which("smartctl")
    if found is None:
        for directory in _SMARTCTL_DIRS:
            candidate = Path(directory) / "smartctl"
            if candidate.is_file():
                return str(candidate)
    return found
