"""The customer's voice as Prometheus gauges (this month, by resolution), computed on scrape.

``fieldlink_kpi_nps``, ``fieldlink_kpi_csat`` (label ``touchpoint``),
``fieldlink_kpi_survey_response_rate`` and ``fieldlink_kpi_followups_on_time_rate`` per
``resolution`` (``all`` for every case); ``fieldlink_followups_overdue``: the open
follow-ups past their due time, whenever they were opened. Undefined figures are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.kpi.report import month_window
from server.kpi.voice import compute_voice
from shared.ids import utcnow

logger = logging.getLogger(__name__)


class VoiceCollector(Collector):
    """Answers this month's NPS, CSAT and follow-up figures from the database on each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "nps": GaugeMetricFamily(
                "fieldlink_kpi_nps", "This month (UTC): Net Promoter Score.", labels=["resolution"]
            ),
            "csat": GaugeMetricFamily(
                "fieldlink_kpi_csat",
                "This month (UTC): mean satisfaction 1-5 per touchpoint.",
                labels=["resolution", "touchpoint"],
            ),
            "response_rate": GaugeMetricFamily(
                "fieldlink_kpi_survey_response_rate",
                "This month (UTC): surveys answered / surveys made.",
                labels=["resolution"],
            ),
            "followups_on_time_rate": GaugeMetricFamily(
                "fieldlink_kpi_followups_on_time_rate",
                "This month (UTC): follow-ups closed by their due time / those due.",
                labels=["resolution"],
            ),
            "overdue": GaugeMetricFamily(
                "fieldlink_followups_overdue", "Open follow-ups past their due time."
            ),
        }

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        from server.surveys.followups import overdue_count

        start, end = month_window(utcnow())
        try:
            with Session(self._engine) as session:
                report = compute_voice(session, start=start, end=end, group_by="resolution")
                overdue = overdue_count(session)
        except Exception:  # a scrape must never fail because of the figures
            logger.exception("the voice figures could not be computed for /metrics")
            return []
        families = self._families()
        rows = [("all", report.total), *((str(g.key), g) for g in report.groups)]
        for label, figures in rows:
            for name in ("nps", "response_rate", "followups_on_time_rate"):
                value = getattr(figures, name)
                if value is not None:
                    families[name].add_metric([label], float(value))
            for touchpoint in ("call_center", "remote_fix", "on_site"):
                value = getattr(figures, f"csat_{touchpoint}")
                if value is not None:
                    families["csat"].add_metric([label, touchpoint], float(value))
        families["overdue"].add_metric([], float(overdue))
        return list(families.values())


def register_voice_collector(
    engine: Engine, registry: CollectorRegistry | None = None
) -> VoiceCollector:
    """Add the voice gauges to ``registry`` (default: the business registry)."""
    if registry is None:
        from server.metrics import BUSINESS_REGISTRY

        registry = BUSINESS_REGISTRY
    collector = VoiceCollector(engine)
    registry.register(collector)
    return collector
