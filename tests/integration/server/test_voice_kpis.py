"""The voice figures in SQL match a Python reference, on SQLite and PostgreSQL; the demo's
remote fixes score higher than its dispatches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from server.db import create_schema, make_engine
from server.incidents.demo import seed_demo_incidents
from server.kpi.voice import compute_voice, nps
from server.models import Device, FollowUp, Incident, Survey
from server.surveys.demo import seed_demo_surveys

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
START, END = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def _devices(session: Session) -> list[Device]:
    rows = []
    for index, (kind, region) in enumerate(
        [("mfp", "emea"), ("imaging", "apac"), ("server", None), ("mfp", "apac")]
    ):
        device = Device(
            id=f"v-{index}", serial=f"S{index}", model="M", type=kind, customer="C", region=region
        )
        session.add(device)
        rows.append(device)
    session.commit()
    return rows


def _reference(session: Session, resolution: str | None) -> dict[str, Any]:
    rows = session.execute(
        sa.select(Survey.recommend, Survey.answered_at, Survey.csat_on_site)  # type: ignore[call-overload]
        .join(Incident, Incident.id == Survey.incident_id)
        .where(
            Incident.closed_at >= START,
            Incident.closed_at < END,
            *([Incident.resolution == resolution] if resolution else []),
        )
    ).all()
    scores = [r.recommend for r in rows if r.recommend is not None]
    on_site = [r.csat_on_site for r in rows if r.csat_on_site is not None]
    return {
        "surveys": len(rows),
        "answers": sum(1 for r in rows if r.answered_at is not None),
        "nps": nps(sum(1 for s in scores if s >= 9), sum(1 for s in scores if s <= 6), len(scores)),
        "csat_on_site": sum(on_site) / len(on_site) if on_site else None,
    }


def test_voice_figures_match_the_reference(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            seed_demo_incidents(session, _devices(session), now=NOW, per_month=60)
            assert seed_demo_surveys(session, now=NOW) > 300
            assert seed_demo_surveys(session, now=NOW) == 0  # once
            by_resolution = compute_voice(
                session, start=START, end=END, group_by="resolution", now=NOW
            )
            groups = {g.key: g for g in by_resolution.groups}
            for resolution in ("remote", "dispatch", "phone"):
                want = _reference(session, resolution)
                got = groups[resolution]
                assert got.surveys == want["surveys"]
                assert got.answers == want["answers"]
                assert got.nps is not None
                assert abs(got.nps - want["nps"]) < 1e-9
                if want["csat_on_site"] is None:
                    assert got.csat_on_site is None
                else:
                    assert abs((got.csat_on_site or 0) - want["csat_on_site"]) < 1e-9
            assert (groups["remote"].nps or 0) > (groups["dispatch"].nps or 0) + 20
            total = _reference(session, None)
            assert by_resolution.total.surveys == total["surveys"]
            assert abs((by_resolution.total.nps or 0) - total["nps"]) < 1e-9
            assert by_resolution.demo_data
            followups = session.execute(sa.select(sa.func.count()).select_from(FollowUp)).one()[0]
            assert by_resolution.total.followups == followups > 0
            rate = by_resolution.total.followups_on_time_rate
            assert rate is not None
            assert 0 < rate <= 1
            for by in ("month", "device_type", "region"):
                report = compute_voice(session, start=START, end=END, group_by=by, now=NOW)
                assert sum(g.surveys for g in report.groups) == report.total.surveys
            months = compute_voice(session, start=START, end=END, group_by="month", now=NOW)
            assert [g.key for g in months.groups][:2] == ["2025-12", "2026-01"]
            empty = compute_voice(
                session,
                start=datetime(2020, 1, 1, tzinfo=UTC),
                end=datetime(2020, 2, 1, tzinfo=UTC),
                now=NOW,
            )
            assert empty.total.surveys == 0
            assert empty.total.nps is None
            assert empty.total.response_rate is None
    finally:
        engine.dispose()
