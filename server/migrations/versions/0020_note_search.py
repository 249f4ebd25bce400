"""note search: a stored tsvector of each resolution note and article (PostgreSQL)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 08:15:00

- PostgreSQL: ``incident.note_search``, a generated (stored) ``tsvector`` of the
  note and its error code, ``NULL`` without a note, and its GIN index
  ``ix_incident_note_vector``; it replaces migration 0011's expression index
  ``ix_incident_note_search``. With the vector stored, a phrase (``SC-541``) is
  rechecked and a hit ranked from the stored vector instead of parsing the note
  again for every candidate row: over a million notes that was the knowledge
  search's time (docs/benchmarks.md "Knowledge search").
- PostgreSQL: ``knowledge_article.article_search`` likewise (title, codes, models,
  steps) and ``ix_knowledge_article_vector``, replacing ``ix_knowledge_article_search``:
  with a few thousand articles the planner rightly skipped that index for a common
  word, and then parsed every article's steps for each search.
- SQLite: nothing (its FTS5 table ``knowledge_fts`` holds the words already).

The columns are the database's own: no model field names them (the ORM never reads
or writes it); :mod:`server.incidents.knowledge` queries it by name.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The stored vector: the same words as migration 0011's NOTE_DOCUMENT.
NOTE_VECTOR = (
    "CASE WHEN resolution_note IS NULL THEN NULL ELSE "
    "to_tsvector('simple', coalesce(error_code, '') || ' ' || resolution_note) END"
)
#: The articles' stored vector: migration 0011's ARTICLE_DOCUMENT.
ARTICLE_VECTOR = "to_tsvector('simple', title || ' ' || keywords || ' ' || steps)"
_OLD_ARTICLE_INDEX = (
    f"CREATE INDEX ix_knowledge_article_search ON knowledge_article USING gin (({ARTICLE_VECTOR}))"
)
_OLD_INDEX = (
    "CREATE INDEX ix_incident_note_search ON incident USING gin "
    "((to_tsvector('simple', coalesce(error_code, '') || ' ' || resolution_note))) "
    "WHERE resolution_note IS NOT NULL"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"ALTER TABLE incident ADD COLUMN note_search tsvector GENERATED ALWAYS AS ({NOTE_VECTOR}) STORED"
    )
    op.execute(
        "CREATE INDEX ix_incident_note_vector ON incident USING gin (note_search) "
        "WHERE note_search IS NOT NULL"
    )
    op.execute("DROP INDEX IF EXISTS ix_incident_note_search")
    op.execute(
        "ALTER TABLE knowledge_article ADD COLUMN article_search tsvector "
        f"GENERATED ALWAYS AS ({ARTICLE_VECTOR}) STORED"
    )
    op.execute(
        "CREATE INDEX ix_knowledge_article_vector ON knowledge_article USING gin (article_search)"
    )
    op.execute("DROP INDEX IF EXISTS ix_knowledge_article_search")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_OLD_ARTICLE_INDEX)
    op.execute("DROP INDEX IF EXISTS ix_knowledge_article_vector")
    op.execute("ALTER TABLE knowledge_article DROP COLUMN article_search")
    op.execute(_OLD_INDEX)
    op.execute("DROP INDEX IF EXISTS ix_incident_note_vector")
    op.execute("ALTER TABLE incident DROP COLUMN note_search")
