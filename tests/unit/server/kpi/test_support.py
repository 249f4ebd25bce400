"""KPI settings, windows, the CSV reader's line numbers, demo data and the /metrics gauges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.kpi.compute import compute_kpis, default_window, month_window
from server.kpi.config import KpiSettings, kpi_settings_of
from server.kpi.csv_io import CsvImportInvalid, import_incidents_csv
from server.kpi.demo import seed_demo_incidents
from server.kpi.metrics import register_kpi_collector
from server.models import Device


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


def test_bad_rows_are_named_by_the_line_they_start_on(engine: Engine) -> None:
    text = (
        "device_id,opened_at,symptom,resolution\n"  # 1
        'mfp-a,2026-03-02T09:00:00Z,"three\nline\nsymptom",\n'  # 2-4
        "mfp-a,2026-03-02T09:00:00Z,fine,\n"  # 5
        "\n"  # 6: blank, ignored
        "mfp-a,2026-03-02T09:00:00,naive,\n"  # 7
        "mfp-a,2026-03-02T09:00:00Z,short\n"  # 8: too few fields
    )
    with Session(engine) as session, pytest.raises(CsvImportInvalid) as caught:
        import_incidents_csv(session, text)
    assert [(p.line, p.field) for p in caught.value.problems] == [(7, "opened_at"), (8, None)]
    assert "line 7, opened_at" in str(caught.value)


def test_demo_incidents_show_the_trend(engine: Engine) -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    with Session(engine) as session:
        devices = list(session.exec(select(Device)).all())
        made = seed_demo_incidents(session, devices, months=12, seed=7, now=now, per_month=300)
        assert made > 3000
        assert seed_demo_incidents(session, devices, months=12, seed=7, now=now) == 0
    with engine.connect() as connection:

        def quarter(start: datetime, end: datetime) -> tuple[float, float, int]:
            total = compute_kpis(connection, start=start, end=end).total
            assert total.self_resolution_rate is not None
            assert total.remote_usage_rate is not None
            return total.self_resolution_rate, total.remote_usage_rate, total.dispatches

        first = quarter(datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
        last = quarter(datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
        report = compute_kpis(
            connection,
            start=datetime(2025, 12, 1, tzinfo=UTC),
            end=datetime(2026, 12, 1, tzinfo=UTC),
            group_by="device_type",
        )
    assert 0.55 < first[0] < 0.70
    assert 0.72 < last[0] < 0.86
    assert last[1] > first[1] + 0.1
    assert last[2] < first[2]
    assert set(report.baseline_source.values()) == {"measured"}
    mttr = {g.key: g for g in report.groups}
    mfp = mttr["mfp"]
    assert mfp.mttr_dispatch_hours is not None
    assert mfp.mttr_remote_hours is not None
    assert mfp.mttr_dispatch_hours > 10 > mfp.mttr_remote_hours
    with engine.connect() as connection:
        labels = connection.exec_driver_sql(
            "SELECT count(*) FROM incident"
            " WHERE external_id LIKE 'demo-7-%' AND symptom LIKE '[demo]%'"
        ).scalar_one()
    assert labels == made


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
