"""Simulated devices: believable, varying health with occasional faults, seedable for tests.

Each call to ``collect`` advances the device by one sampling step. Values
drift the way the real ones do (toner falls as pages rise, an image cache
fills until it is purged) and faults come and go in episodes that last a few
samples (a paper jam until someone clears it, a PACS peer unreachable for a
while). The same seed always gives the same sequence.
"""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass

from agent.health.collectors.base import Reading
from agent.health.profiles.base import ProfileOptions
from shared.wire import FaultReport
from shared.wire import Severity as FaultSeverity

_TONERS = ("black", "cyan", "magenta", "yellow")
# Service-call codes an MFP raises, with what its panel says.
_SERVICE_CALLS = (
    ("SC-541", "Fuser thermistor open"),
    ("SC-542", "Fuser temperature warm-up error"),
    ("SC-320", "Polygon motor error"),
    ("SC-899", "Software performance error"),
)
_JAMS = (
    ("J-101", "Paper jam: tray 1 feed"),
    ("J-103", "Paper jam: registration roller"),
    ("J-201", "Paper jam: duplex unit"),
    ("J-300", "Paper jam: fuser exit"),
)
_DICOM_PEERS = ("pacs", "worklist")
_IMAGING_SERVICES = ("acquisition", "dicom_store", "viewer")
_SERVER_SERVICES = ("sshd", "database", "backup", "web")


def _rng(options: ProfileOptions, kind: str) -> random.Random:
    # Seeded per device and kind, so a seeded fleet is repeatable and its devices differ.
    if options.seed is None:
        return random.Random()  # noqa: S311 - simulation, not security
    seed = options.seed * 1_000_003 + zlib.crc32(f"{kind}/{options.device_id}".encode())
    return random.Random(seed)  # noqa: S311 - simulation, not security


@dataclass(slots=True)
class _Episode:
    """A fault that, once started, lasts a random number of samples."""

    code: str = ""
    message: str = ""
    severity: FaultSeverity = "error"
    remaining: int = 0

    @property
    def active(self) -> bool:
        return self.remaining > 0

    def step(self) -> None:
        if self.remaining > 0:
            self.remaining -= 1

    def start(
        self, code: str, message: str, samples: int, severity: FaultSeverity = "error"
    ) -> None:
        self.code, self.message, self.severity, self.remaining = code, message, severity, samples

    def report(self) -> FaultReport:
        return {"code": self.code, "severity": self.severity, "message": self.message}


class SimulatedHost:
    """Generic host metrics for a simulated device: CPU, memory, root disk, uptime, load.

    Used by the fleet simulator instead of psutil, so thousands of devices in one
    process do not all report the simulator's own machine.
    """

    name = "simhost"

    def __init__(self, options: ProfileOptions) -> None:
        self._rng = _rng(options, "host")
        self._cpu = self._rng.uniform(2, 20)
        self._mem = self._rng.uniform(25, 60)
        self._disk = self._rng.uniform(20, 70)
        self._booted = time.monotonic() - self._rng.uniform(3_600, 90 * 86_400)

    async def collect(self) -> Reading:
        """One step of the simulated host."""
        rng = self._rng
        self._cpu = min(100.0, max(0.5, self._cpu + rng.gauss(0, 4) + (8 - self._cpu) * 0.1))
        self._mem = min(99.0, max(10.0, self._mem + rng.gauss(0, 1) + (45 - self._mem) * 0.05))
        self._disk = min(99.0, self._disk + rng.uniform(0, 0.02))
        return Reading(
            metrics={
                "cpu_percent": round(self._cpu, 1),
                "mem_percent": round(self._mem, 1),
                "disk_percent:/": round(self._disk, 2),
                "uptime_s": round(time.monotonic() - self._booted),
                "load1": round(self._cpu / 25, 2),
            }
        )


class SimulatedMfp:
    """A multifunction printer: toner falling and replaced, pages rising, jams and service calls.

    Metrics: ``mfp.toner_<color>_percent``, ``mfp.pages_total``,
    ``mfp.paper_jams_total``, ``mfp.paper_tray1_percent``, ``mfp.jammed``.
    Faults: ``TONER-OUT-<COLOR>`` (error), ``TONER-LOW-<COLOR>`` (warning),
    ``J-xxx`` paper jams (error), ``SC-xxx`` service calls (critical).
    """

    name = "mfp"

    def __init__(self, options: ProfileOptions) -> None:
        self._rng = rng = _rng(options, self.name)
        self._toner = {color: rng.uniform(15, 100) for color in _TONERS}
        self._pages = rng.randint(1_000, 400_000)
        self._jams_total = rng.randint(0, 200)
        self._tray = rng.uniform(20, 100)
        self._jam = _Episode()
        self._service_call = _Episode()

    async def collect(self) -> Reading:
        """One step of the simulated printer."""
        rng = self._rng
        self._jam.step()
        self._service_call.step()
        printing = not (self._jam.active or self._service_call.active)
        pages = rng.choice((0, 0, 0, rng.randint(1, 60))) if printing else 0
        self._pages += pages
        self._tray -= pages * 0.2
        if self._tray < 5 and rng.random() < 0.3:
            self._tray = 100.0
        faults: list[FaultReport] = []
        for color in _TONERS:
            # Black runs out fastest; colour pages are rarer.
            use = pages * rng.uniform(0.002, 0.02) * (1.0 if color == "black" else 0.5)
            self._toner[color] = max(0.0, self._toner[color] - use)
            level = self._toner[color]
            if level < 3 and rng.random() < 0.15:
                self._toner[color] = 100.0  # the customer put in a new cartridge
            elif level <= 0:
                faults.append(
                    {
                        "code": f"TONER-OUT-{color.upper()}",
                        "severity": "error",
                        "message": f"{color.capitalize()} toner empty",
                    }
                )
            elif level < 10:
                faults.append(
                    {
                        "code": f"TONER-LOW-{color.upper()}",
                        "severity": "warning",
                        "message": f"{color.capitalize()} toner low ({level:.0f}%)",
                    }
                )
        if printing and pages and rng.random() < 0.04:
            code, message = rng.choice(_JAMS)
            self._jam.start(code, message, rng.randint(1, 4))
            self._jams_total += 1
        if not self._service_call.active and rng.random() < 0.004:
            code, message = rng.choice(_SERVICE_CALLS)
            self._service_call.start(code, message, rng.randint(3, 30), "critical")
        faults.extend(e.report() for e in (self._jam, self._service_call) if e.active)
        metrics = {f"mfp.toner_{c}_percent": round(v, 1) for c, v in self._toner.items()}
        metrics.update(
            {
                "mfp.pages_total": float(self._pages),
                "mfp.paper_jams_total": float(self._jams_total),
                "mfp.paper_tray1_percent": round(max(0.0, self._tray), 1),
                "mfp.jammed": 1.0 if self._jam.active else 0.0,
            }
        )
        return Reading(metrics=metrics, faults=faults)


class SimulatedImaging:
    """A medical imaging console: DICOM peers up and down, an image cache filling, services.

    Metrics: ``imaging.dicom_peer_up:<peer>``, ``imaging.dicom_echo_ms:<peer>``
    (while up), ``imaging.cache_disk_percent``, ``imaging.studies_total``,
    ``imaging.service_up:<service>``.
    Faults: ``DICOM-ECHO-FAIL-<PEER>`` (error), ``CACHE-HIGH`` (warning),
    ``CACHE-FULL`` (error), ``SVC-DOWN-<SERVICE>`` (error).
    """

    name = "imaging"

    def __init__(self, options: ProfileOptions) -> None:
        self._rng = rng = _rng(options, self.name)
        self._peer_down = {peer: _Episode() for peer in _DICOM_PEERS}
        self._service_down = {service: _Episode() for service in _IMAGING_SERVICES}
        self._cache = rng.uniform(30, 80)
        self._studies = rng.randint(100, 50_000)

    async def collect(self) -> Reading:
        """One step of the simulated console."""
        rng = self._rng
        metrics: dict[str, float] = {}
        faults: list[FaultReport] = []
        for peer, down in self._peer_down.items():
            down.step()
            if not down.active and rng.random() < 0.01:
                down.start(
                    f"DICOM-ECHO-FAIL-{peer.upper()}",
                    f"DICOM C-ECHO to {peer} failed: association rejected or timed out",
                    rng.randint(2, 20),
                )
            metrics[f"imaging.dicom_peer_up:{peer}"] = 0.0 if down.active else 1.0
            if down.active:
                faults.append(down.report())
            else:
                metrics[f"imaging.dicom_echo_ms:{peer}"] = round(rng.lognormvariate(2.3, 0.4), 1)
        for service, down in self._service_down.items():
            down.step()
            if not down.active and rng.random() < 0.003:
                down.start(f"SVC-DOWN-{service.upper()}", f"service {service} is not running", 3)
            metrics[f"imaging.service_up:{service}"] = 0.0 if down.active else 1.0
            if down.active:
                faults.append(down.report())
        new_studies = rng.choice((0, 0, 1, 1, 2))
        self._studies += new_studies
        self._cache = min(100.0, self._cache + new_studies * rng.uniform(0.05, 0.4))
        # Housekeeping purges old studies now and then, always when nearly full.
        if self._cache > 97 or (self._cache > 85 and rng.random() < 0.05):
            self._cache = rng.uniform(40, 60)
        if self._cache >= 95:
            faults.append(
                {"code": "CACHE-FULL", "severity": "error", "message": "Image cache disk full"}
            )
        elif self._cache >= 85:
            faults.append(
                {
                    "code": "CACHE-HIGH",
                    "severity": "warning",
                    "message": f"Image cache disk {self._cache:.0f}% full",
                }
            )
        metrics["imaging.cache_disk_percent"] = round(self._cache, 2)
        metrics["imaging.studies_total"] = float(self._studies)
        return Reading(metrics=metrics, faults=faults)


class SimulatedServer:
    """A server: services up and down, SMART sector reallocations, a data disk filling.

    Metrics: ``server.service_up:<service>``, ``server.smart_reallocated_sectors``,
    ``server.disk_data_percent``, ``server.raid_degraded``.
    Faults: ``SVC-DOWN-<SERVICE>`` (error), ``SMART-REALLOC`` (warning),
    ``DISK-FULL`` (error), ``RAID-DEGRADED`` (critical).
    """

    name = "server"

    def __init__(self, options: ProfileOptions) -> None:
        self._rng = rng = _rng(options, self.name)
        self._service_down = {service: _Episode() for service in _SERVER_SERVICES}
        self._reallocated = rng.choice((0, 0, 0, rng.randint(1, 20)))
        self._data_disk = rng.uniform(20, 80)
        self._raid = _Episode()

    async def collect(self) -> Reading:
        """One step of the simulated server."""
        rng = self._rng
        metrics: dict[str, float] = {}
        faults: list[FaultReport] = []
        for service, down in self._service_down.items():
            down.step()
            if not down.active and rng.random() < 0.005:
                down.start(f"SVC-DOWN-{service.upper()}", f"service {service} is not running", 4)
            metrics[f"server.service_up:{service}"] = 0.0 if down.active else 1.0
            if down.active:
                faults.append(down.report())
        if rng.random() < 0.01:
            self._reallocated += rng.randint(1, 8)
        if self._reallocated > 50:
            faults.append(
                {
                    "code": "SMART-REALLOC",
                    "severity": "warning",
                    "message": f"{self._reallocated} reallocated sectors on /dev/sda",
                }
            )
        self._data_disk = min(100.0, self._data_disk + rng.uniform(0, 0.3))
        if self._data_disk > 96 and rng.random() < 0.2:
            self._data_disk = rng.uniform(30, 60)  # an administrator cleaned up
        if self._data_disk >= 95:
            faults.append(
                {"code": "DISK-FULL", "severity": "error", "message": "/data is nearly full"}
            )
        self._raid.step()
        if not self._raid.active and rng.random() < 0.001:
            self._raid.start("RAID-DEGRADED", "RAID array md0 degraded", 50, "critical")
        if self._raid.active:
            faults.append(self._raid.report())
        metrics["server.smart_reallocated_sectors"] = float(self._reallocated)
        metrics["server.disk_data_percent"] = round(self._data_disk, 2)
        metrics["server.raid_degraded"] = 1.0 if self._raid.active else 0.0
        return Reading(metrics=metrics, faults=faults)
