"""Health collectors: plug-ins (see :mod:`agent.health.registry`), each time-bounded."""

from __future__ import annotations

from agent.health.collectors.base import (
    Collector,
    CollectorBusy,
    Reading,
    collect_all,
    status_of,
)
from agent.health.collectors.system import SystemCollector
from agent.health.registry import create_collector, register_collector, registered_collectors
from shared.wire import FaultReport

__all__ = [
    "Collector",
    "CollectorBusy",
    "FaultReport",
    "Reading",
    "SystemCollector",
    "collect_all",
    "create_collector",
    "register_collector",
    "registered_collectors",
    "status_of",
]
