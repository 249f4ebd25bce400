"""The current month's KPIs as Prometheus gauges, computed when ``/metrics`` is scraped.

Labels stay bounded: ``device_type`` (``mfp``, ``imaging``, ``server``, and
``all`` for the whole fleet). A figure that is undefined (a rate over
nothing) is left out rather than exported as a made-up number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine

from server.kpi.compute import compute_kpis
from server.kpi.config import kpi_settings_of
from server.kpi.report import KPI_DEFINITIONS, month_window
from shared.ids import utcnow

logger = logging.getLogger(__name__)

PREFIX = "fieldlink_kpi_"


class KpiCollector(Collector):
    """Answers the current month's KPIs per device type from the database on each scrape."""

    def __init__(self, engine: Engine, settings: Any) -> None:
        self._engine = engine
        self._settings = kpi_settings_of(settings)

    def describe(self) -> Iterable[Metric]:
        # Declared without samples so that registering never queries the database.
        return [self._family(name) for name in KPI_DEFINITIONS]

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            PREFIX + name,
            f"This month (UTC): {KPI_DEFINITIONS[name]}.",
            labels=["device_type"],
        )

    def collect(self) -> Iterable[Metric]:
        start, end = month_window(utcnow())
        try:
            with self._engine.connect() as connection:
                report = compute_kpis(
                    connection,
                    start=start,
                    end=end,
                    group_by="device_type",
                    settings=self._settings,
                )
        except Exception:  # a scrape must never fail because of the KPIs
            logger.exception("the KPIs could not be computed for /metrics")
            return []
        families = {name: self._family(name) for name in KPI_DEFINITIONS}
        rows = [("all", report.total.model_dump())]
        rows += [(str(g.key), g.model_dump(exclude={"key", "calls"})) for g in report.groups]
        for label, figures in rows:
            for name, value in figures.items():
                if value is not None:
                    families[name].add_metric([label], float(value))
        return list(families.values())


def register_kpi_collector(
    engine: Engine, settings: Any, registry: CollectorRegistry | None = None
) -> KpiCollector:
    """Add the KPI gauges to ``registry`` (default: :data:`server.metrics.BUSINESS_REGISTRY`).

    Returns the collector, so that a caller can ``registry.unregister`` it.
    """
    if registry is None:
        from server.metrics import BUSINESS_REGISTRY

        registry = BUSINESS_REGISTRY
    collector = KpiCollector(engine, settings)
    registry.register(collector)
    return collector
