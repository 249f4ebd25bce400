"""The CSV reader's line numbers and the demo incidents' trend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.incidents.csv_io import CsvImportInvalid, import_incidents_csv
from server.incidents.demo import seed_demo_incidents
from server.kpi.compute import compute_kpis
from server.models import Device


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
