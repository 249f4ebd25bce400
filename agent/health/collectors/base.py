"""The collector plug-in interface: what every health collector and device profile provides.

A collector is a small async object registered by name. The agent calls each
one once per sample under a time bound; one that hangs or fails is logged and
left out of that sample, and never takes the agent down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.wire import FaultReport, HealthStatus

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Reading:
    """What one collector observed: named numbers and the faults present right now."""

    metrics: dict[str, float] = field(default_factory=dict)
    faults: list[FaultReport] = field(default_factory=list)


class Collector(Protocol):
    """A source of health metrics: the host (psutil), an MFP (SNMP), a PACS peer (DICOM)...

    Attributes:
        name: The name it is registered and logged under.
    """

    name: str

    async def collect(self) -> Reading:
        """Observe once. May raise; may hang (the caller bounds it in time)."""
        ...


class CollectorBusy(RuntimeError):
    """The collector's previous call is still running (it hung), so this one is skipped."""


def status_of(faults: Sequence[FaultReport]) -> HealthStatus:
    """The sample's status: ``fault`` for an error or critical fault, ``warning`` for a warning."""
    severities = {fault["severity"] for fault in faults}
    if severities & {"error", "critical"}:
        return "fault"
    if "warning" in severities:
        return "warning"
    return "ok"


async def _bounded(collector: Collector, timeout_s: float) -> Reading | None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            return await collector.collect()
    except TimeoutError:
        logger.warning(
            "collector %s gave no answer within %.1f s; left out", collector.name, timeout_s
        )
    except CollectorBusy:
        logger.warning("collector %s is still busy with its last call; left out", collector.name)
    except Exception:
        logger.exception(
            "collector %s failed after %.3f s; left out", collector.name, time.monotonic() - started
        )
    return None


async def collect_all(collectors: Sequence[Collector], timeout_s: float) -> Reading:
    """Call every collector at once, each bounded by ``timeout_s``, and merge what answered.

    A collector that times out, is still busy or raises is logged and left out.
    """
    readings = await asyncio.gather(*(_bounded(c, timeout_s) for c in collectors))
    merged = Reading()
    for reading in readings:
        if reading is None:
            continue
        for name, value in reading.metrics.items():
            # The wire format refuses NaN and infinities.
            if math.isfinite(value):
                merged.metrics[name] = value
        merged.faults.extend(reading.faults)
    return merged
