"""KPI settings: ``[server.kpi]`` of ``server.toml`` (docs/kpis.md's configured values).

Example::

    [server.kpi]
    baseline_min_samples = 5
    alerts_open_incidents = true

    [server.kpi.dispatch_cost]
    mfp = 180.0

Each key has an environment override, e.g. ``FIELDLINK_KPI__DISPATCH_COST__MFP=180``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BaselineTtrFallbackHours(BaseModel):
    """Downtime a dispatch costs, in hours, per device type, when too few were measured."""

    model_config = ConfigDict(extra="forbid")

    mfp: float = Field(default=24.0, ge=0)
    imaging: float = Field(default=12.0, ge=0)
    server: float = Field(default=8.0, ge=0)


class DispatchCost(BaseModel):
    """What sending an engineer on site costs, per device type (in the currency of the books)."""

    model_config = ConfigDict(extra="forbid")

    mfp: float = Field(default=150.0, ge=0)
    imaging: float = Field(default=600.0, ge=0)
    server: float = Field(default=300.0, ge=0)


class KpiSettings(BaseModel):
    """How the KPIs value a remote fix, and whether device faults open incidents."""

    model_config = ConfigDict(extra="forbid")

    #: Used for ``baseline_ttr(type)`` when fewer than ``baseline_min_samples``
    #: dispatches of that type were closed in the window.
    baseline_ttr_fallback_hours: BaselineTtrFallbackHours = Field(
        default_factory=BaselineTtrFallbackHours
    )
    dispatch_cost: DispatchCost = Field(default_factory=DispatchCost)
    #: Dispatches of a type needed in the window to measure its baseline (the median).
    baseline_min_samples: int = Field(default=5, ge=1)
    #: Whether a device fault opens an incident (channel ``alert``) by itself.
    alerts_open_incidents: bool = False

    def fallback_hours(self, device_type: str) -> float:
        """The configured baseline ttr of ``device_type``, in hours."""
        return float(getattr(self.baseline_ttr_fallback_hours, device_type))

    def cost_of_dispatch(self, device_type: str) -> float:
        """The configured cost of one dispatch to a device of ``device_type``."""
        return float(getattr(self.dispatch_cost, device_type))


def kpi_settings_of(settings: object) -> KpiSettings:
    """The KPI settings of the server's settings (``settings.kpi``), or the defaults."""
    if isinstance(settings, KpiSettings):
        return settings
    kpi = getattr(settings, "kpi", None)
    return kpi if isinstance(kpi, KpiSettings) else KpiSettings()
