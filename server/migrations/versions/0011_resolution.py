"""resolution notes, and the restore time a cleared fault proposes

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06 04:30:00.000000

- ``incident.resolution_note``: what was done and which parts were used (the
  fault-case knowledge base's fixes, in and out of the incident CSV).
- ``incident.restored_at_proposed``: an alert-opened incident's fault cleared on
  the device at this time; the desk confirms it as ``restored_at`` when closing.
- ``ix_incident_error_code_closed_at``: similar past cases of one error code.
- ``knowledge_article``: specialists' articles (title, error codes, models, steps).
- Full-text search over articles and resolution notes (``GET /api/v1/knowledge?q=``):
  on SQLite an FTS5 table ``knowledge_fts`` kept by triggers (rowid ``2 * incident.id``
  for a note, ``2 * article.id + 1`` for an article); on PostgreSQL GIN indexes on the
  ``to_tsvector('simple', ...)`` expressions :mod:`server.incidents.knowledge` queries.
  A later SQLite migration that recreates ``incident`` or ``knowledge_article``
  (batch "move and copy") drops their triggers: it must create them again
  (``_SQLITE_SEARCH`` here).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

from server.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(title, body, "
    "tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER knowledge_article_fts_insert AFTER INSERT ON knowledge_article BEGIN "
    "INSERT INTO knowledge_fts (rowid, title, body) "
    "VALUES (new.id * 2 + 1, new.title, new.keywords || ' ' || new.steps); END",
    "CREATE TRIGGER knowledge_article_fts_update AFTER UPDATE ON knowledge_article BEGIN "
    "DELETE FROM knowledge_fts WHERE rowid = old.id * 2 + 1; "
    "INSERT INTO knowledge_fts (rowid, title, body) "
    "VALUES (new.id * 2 + 1, new.title, new.keywords || ' ' || new.steps); END",
    "CREATE TRIGGER knowledge_article_fts_delete AFTER DELETE ON knowledge_article BEGIN "
    "DELETE FROM knowledge_fts WHERE rowid = old.id * 2 + 1; END",
    "CREATE TRIGGER incident_note_fts_insert AFTER INSERT ON incident "
    "WHEN new.resolution_note IS NOT NULL BEGIN "
    "INSERT INTO knowledge_fts (rowid, title, body) "
    "VALUES (new.id * 2, coalesce(new.error_code, ''), new.resolution_note); END",
    "CREATE TRIGGER incident_note_fts_update AFTER UPDATE OF resolution_note, error_code "
    "ON incident BEGIN "
    "DELETE FROM knowledge_fts WHERE rowid = old.id * 2; "
    "INSERT INTO knowledge_fts (rowid, title, body) "
    "SELECT new.id * 2, coalesce(new.error_code, ''), new.resolution_note "
    "WHERE new.resolution_note IS NOT NULL; END",
    "CREATE TRIGGER incident_note_fts_delete AFTER DELETE ON incident BEGIN "
    "DELETE FROM knowledge_fts WHERE rowid = old.id * 2; END",
)
_SQLITE_SEARCH_DROP = (
    "DROP TRIGGER IF EXISTS incident_note_fts_delete",
    "DROP TRIGGER IF EXISTS incident_note_fts_update",
    "DROP TRIGGER IF EXISTS incident_note_fts_insert",
    "DROP TRIGGER IF EXISTS knowledge_article_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_article_fts_update",
    "DROP TRIGGER IF EXISTS knowledge_article_fts_insert",
    "DROP TABLE IF EXISTS knowledge_fts",
)
#: The expressions server.incidents.knowledge searches (an index serves only its exact text).
NOTE_DOCUMENT = "to_tsvector('simple', coalesce(error_code, '') || ' ' || resolution_note)"
ARTICLE_DOCUMENT = "to_tsvector('simple', title || ' ' || keywords || ' ' || steps)"
_POSTGRES_SEARCH = (
    f"CREATE INDEX ix_incident_note_search ON incident USING gin (({NOTE_DOCUMENT})) "
    "WHERE resolution_note IS NOT NULL",
    "CREATE INDEX ix_knowledge_article_search ON knowledge_article "
    f"USING gin (({ARTICLE_DOCUMENT}))",
)


def upgrade() -> None:
    op.create_table(
        "knowledge_article",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column(
            "error_codes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "models",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("keywords", sqlmodel.sql.sqltypes.AutoString(length=8000), nullable=False),
        sa.Column("steps", sqlmodel.sql.sqltypes.AutoString(length=20000), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "resolution_note", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True
            )
        )
        batch_op.add_column(sa.Column("restored_at_proposed", UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_incident_error_code_closed_at", ["error_code", "closed_at"], unique=False
        )
    search = _POSTGRES_SEARCH if op.get_bind().dialect.name == "postgresql" else _SQLITE_SEARCH
    for statement in search:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_knowledge_article_search")
        op.execute("DROP INDEX IF EXISTS ix_incident_note_search")
    else:
        for statement in _SQLITE_SEARCH_DROP:
            op.execute(statement)
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_error_code_closed_at")
        batch_op.drop_column("restored_at_proposed")
        batch_op.drop_column("resolution_note")
    op.drop_table("knowledge_article")
