"""The host's own health through psutil: CPU, memory, disks, temperatures, uptime, network, load.

psutil sits behind :class:`HostSource`, a narrow interface, so tests feed fixed
values. psutil calls read ``/proc`` and ``/sys`` and can block (a hung NFS
mount), so they run in a worker thread under the caller's time bound.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agent.health.collectors.base import CollectorBusy, Reading

logger = logging.getLogger(__name__)

#: Filesystems that are never a real disk worth reporting (images, pseudo and network mounts).
_SKIP_FSTYPES: Final = frozenset({"squashfs", "iso9660", "overlay", "tmpfs", "devtmpfs", "nfs"})
_NAME_DROP = re.compile(r"[^A-Za-z0-9_.:/-]+")


@dataclass(frozen=True, slots=True)
class NetworkErrors:
    """Counters of network errors and drops since boot, over every interface."""

    errors_in: int
    errors_out: int
    drops_in: int
    drops_out: int


class HostSource(Protocol):
    """What the system collector asks of the host; psutil in production, fixed values in tests."""

    def cpu_percent(self) -> float:
        """CPU use in percent of all cores since the previous call."""
        ...

    def mem_percent(self) -> float:
        """Memory in use, percent."""
        ...

    def disk_percents(self) -> dict[str, float]:
        """Percent used of every real mounted disk, by mount point."""
        ...

    def temperatures(self) -> dict[str, float]:
        """Temperatures in degrees Celsius by sensor name (empty where there are none)."""
        ...

    def boot_time(self) -> float:
        """When the host booted, seconds since the epoch."""
        ...

    def network_errors(self) -> NetworkErrors:
        """Network error and drop counters."""
        ...

    def load_average(self) -> tuple[float, float, float]:
        """The 1, 5 and 15 minute load averages."""
        ...


class PsutilHost:
    """:class:`HostSource` over psutil (imported on first use)."""

    def __init__(self) -> None:
        import psutil  # the agent's heaviest import but one; only the system collector needs it

        self._psutil: Any = psutil
        # The first cpu_percent() call only sets the reference point.
        psutil.cpu_percent(interval=None)

    def cpu_percent(self) -> float:
        return float(self._psutil.cpu_percent(interval=None))

    def mem_percent(self) -> float:
        return float(self._psutil.virtual_memory().percent)

    def disk_percents(self) -> dict[str, float]:
        percents: dict[str, float] = {}
        seen_devices: set[str] = set()
        for part in self._psutil.disk_partitions(all=False):
            if part.fstype in _SKIP_FSTYPES or part.device.startswith("/dev/loop"):
                continue
            # A device mounted twice (bind mounts) is one disk.
            if part.device in seen_devices:
                continue
            seen_devices.add(part.device)
            try:
                percents[part.mountpoint] = float(self._psutil.disk_usage(part.mountpoint).percent)
            except OSError as exc:
                logger.debug("disk %s unreadable: %s", part.mountpoint, exc)
        return percents

    def temperatures(self) -> dict[str, float]:
        read = getattr(self._psutil, "sensors_temperatures", None)
        if read is None:
            return {}
        temps: dict[str, float] = {}
        for chip, sensors in read().items():
            for index, sensor in enumerate(sensors):
                temps[f"{chip}.{sensor.label or index}"] = float(sensor.current)
        return temps

    def boot_time(self) -> float:
        return float(self._psutil.boot_time())

    def network_errors(self) -> NetworkErrors:
        counters = self._psutil.net_io_counters()
        if counters is None:
            return NetworkErrors(0, 0, 0, 0)
        return NetworkErrors(counters.errin, counters.errout, counters.dropin, counters.dropout)

    def load_average(self) -> tuple[float, float, float]:
        one, five, fifteen = self._psutil.getloadavg()
        return float(one), float(five), float(fifteen)


def _metric_suffix(name: str) -> str:
    return _NAME_DROP.sub("_", name.strip())[:100] or "_"


def read_host(source: HostSource, now: float | None = None) -> dict[str, float]:
    """Every host metric from ``source`` (blocking: call it in a thread).

    Metrics: ``cpu_percent``, ``mem_percent``, ``disk_percent:<mount>``,
    ``temp_c:<sensor>``, ``uptime_s``, ``net_errors_in``, ``net_errors_out``,
    ``net_drops_in``, ``net_drops_out``, ``load1``, ``load5``, ``load15``.
    """
    metrics: dict[str, float] = {
        "cpu_percent": source.cpu_percent(),
        "mem_percent": source.mem_percent(),
    }
    for mount, percent in source.disk_percents().items():
        metrics[f"disk_percent:{_metric_suffix(mount)}"] = percent
    for sensor, celsius in source.temperatures().items():
        metrics[f"temp_c:{_metric_suffix(sensor)}"] = celsius
    current = time.time() if now is None else now
    metrics["uptime_s"] = round(max(0.0, current - source.boot_time()), 1)
    net = source.network_errors()
    metrics["net_errors_in"] = float(net.errors_in)
    metrics["net_errors_out"] = float(net.errors_out)
    metrics["net_drops_in"] = float(net.drops_in)
    metrics["net_drops_out"] = float(net.drops_out)
    metrics["load1"], metrics["load5"], metrics["load15"] = source.load_average()
    return metrics


class SystemCollector:
    """The host's health (registered as ``system``).

    Args:
        source: Where the numbers come from; psutil when ``None``.
    """

    name = "system"

    def __init__(self, source: HostSource | None = None) -> None:
        self._source = source
        self._running: asyncio.Future[dict[str, float]] | None = None

    async def collect(self) -> Reading:
        """Read the host in a worker thread.

        Raises:
            CollectorBusy: when the previous read is still stuck in its thread; a
                thread cannot be cancelled, so piling up more would exhaust the pool.
        """
        if self._running is not None and not self._running.done():
            raise CollectorBusy(self.name)
        loop = asyncio.get_running_loop()
        if self._source is None:
            self._source = await loop.run_in_executor(None, PsutilHost)
        self._running = loop.run_in_executor(None, read_host, self._source)
        # Shielded: when the caller's time bound cancels us, the thread still runs and
        # the future must stay pending so that the next call sees it as busy.
        return Reading(metrics=await asyncio.shield(self._running))
