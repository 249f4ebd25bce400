"""The knowledge search ranks and counts every matching article and the newest matching notes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.incidents import knowledge
from server.incidents.records import create_incident
from server.models import IncidentCreate, KnowledgeArticleCreate

OPENED = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_only_the_newest_notes_are_ranked_and_counted(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knowledge, "RANKED_NOTES", 3)
    with Session(engine) as session:
        ids = []
        for number in range(5):
            at = OPENED + timedelta(hours=number)
            incident = create_incident(
                session,
                data=IncidentCreate(
                    device_id="mfp-a",
                    opened_at=at,
                    restored_at=at + timedelta(hours=1),
                    closed_at=at + timedelta(hours=1),
                    resolution="remote",
                    error_code="SC-541",
                    resolution_note=f"Fuser unit replaced, case {number}",
                ),
            )
            ids.append(incident.id)
        article = knowledge.create_article(
            session,
            data=KnowledgeArticleCreate(
                title="Fuser faults", error_codes=["SC-541"], steps="Check the fuser unit first"
            ),
            author="spec1",
        )
        found = knowledge.search(session, q="fuser unit", limit=20)
        assert found.count == 4  # the article and the 3 newest notes: at least 3 notes
        kinds = {(hit.kind, hit.id) for hit in found.items}
        assert kinds == {("article", article.id), *(("note", i) for i in ids[2:])}
        note = next(hit for hit in found.items if hit.kind == "note")
        assert note.device_id == "mfp-a"
        assert note.error_codes == ["SC-541"]
        assert note.title == f"Incident #{note.id} (SC-541)"
        top = knowledge.search(session, q="fuser", limit=1)
        assert (len(top.items), top.count) == (1, 4)
        assert knowledge.search(session, q="nothing-like-this", limit=5).items == []
