"""KPI settings, windows and the /metrics gauges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.incidents.csv_io import import_incidents_csv
from server.kpi.config import KpiSettings, kpi_settings_of
from server.kpi.metrics import register_kpi_collector
from server.kpi.report import default_window, month_window


def test_settings_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = KpiSettings()
    assert [defaults.fallback_hours(t) for t in ("mfp", "imaging", "server")] == [24, 12, 8]
    assert [defaults.cost_of_dispatch(t) for t in ("mfp", "imaging", "server")] == [150, 600, 300]
    assert defaults.baseline_min_samples == 5
    assert defaults.alerts_open_incidents is False
    partial = KpiSettings.model_validate({"dispatch_cost": {"mfp": 180}})
    assert partial.cost_of_dispatch("mfp") == 180
    assert partial.cost_of_dispatch("imaging") == 600
    with pytest.raises(ValueError, match="toaster"):
        KpiSettings.model_validate({"dispatch_cost": {"toaster": 1}})
    with pytest.raises(ValueError, match="baseline_min_samples"):
        KpiSettings(baseline_min_samples=0)
    assert kpi_settings_of(object()) == KpiSettings()
    assert kpi_settings_of(partial) is partial


def test_windows() -> None:
    now = datetime(2026, 1, 15, 10, tzinfo=UTC)
    assert default_window(now) == (
        datetime(2025, 2, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert month_window(datetime(2026, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_metrics_show_this_months_kpis_per_device_type(engine: Engine) -> None:
    text = (
        "device_id,opened_at,restored_at,closed_at,resolution,remote_session_used\n"
        "mfp-a,{t},{t},{t},remote,true\nimaging-a,{t},{t},{t},dispatch,false\n"
    ).format(t=datetime.now(UTC).replace(microsecond=0).isoformat())
    with Session(engine) as session:
        import_incidents_csv(session, text)
    registry = CollectorRegistry()
    register_kpi_collector(engine, KpiSettings(), registry)
    exposition = generate_latest(registry).decode()
    assert 'fieldlink_kpi_incidents_closed{device_type="all"} 2.0' in exposition
    assert 'fieldlink_kpi_dispatches_avoided{device_type="mfp"} 1.0' in exposition
    assert 'fieldlink_kpi_cost_saved{device_type="all"} 150.0' in exposition
    # no server incident: its rates are undefined and left out, its counts are 0
    assert 'fieldlink_kpi_remote_usage_rate{device_type="server"}' not in exposition
    assert 'fieldlink_kpi_incidents_closed{device_type="server"} 0.0' in exposition
    labels = {line.split("{")[1].split("}")[0] for line in exposition.splitlines() if "{" in line}
    assert labels == {f'device_type="{t}"' for t in ("all", "mfp", "imaging", "server")}


def test_metrics_survive_a_broken_database(engine: Engine) -> None:
    registry = CollectorRegistry()
    register_kpi_collector(engine, KpiSettings(), registry)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE incident_session")
        connection.exec_driver_sql("DROP TABLE incident")
    assert b"fieldlink_kpi_incidents_closed{" not in generate_latest(registry)
