"""Health collectors: plug-ins registered by name, each called under a time bound."""

from __future__ import annotations

from agent.collectors.base import (
    Collector,
    CollectorBusy,
    Reading,
    collect_all,
    create_collector,
    register_collector,
    registered_collectors,
    status_of,
)
from agent.collectors.system import SystemCollector
from shared.wire import FaultReport

register_collector("system", SystemCollector)

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
