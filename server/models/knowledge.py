"""Knowledge articles: how specialists fix a fault, searchable with past resolution notes.

The full-text search objects (an FTS5 table and its triggers on SQLite, GIN
indexes and the notes' generated ``tsvector`` column on PostgreSQL) are
dialect-specific and live only in the migrations: :data:`SEARCH_OBJECTS` names them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.models.base import JSONType, utc_column
from shared.ids import utcnow

#: The search objects the migrations create beside the models' tables (SQLite FTS5
#: and its shadow tables, PostgreSQL GIN indexes).
SEARCH_OBJECTS: frozenset[str] = frozenset(
    {
        "knowledge_fts",
        "knowledge_fts_data",
        "knowledge_fts_idx",
        "knowledge_fts_content",
        "knowledge_fts_docsize",
        "knowledge_fts_config",
        "ix_incident_note_search",
        "ix_knowledge_article_search",
        # PostgreSQL, migration 0020: the stored tsvectors and their GIN indexes.
        "note_search",
        "ix_incident_note_vector",
        "article_search",
        "ix_knowledge_article_vector",
    }
)
TITLE_MAX = 200
STEPS_MAX = 20_000


class KnowledgeArticleCreate(SQLModel):
    """Body of ``POST /api/v1/knowledge/articles``."""

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    error_codes: list[str] = Field(default_factory=list, max_length=50)
    models: list[str] = Field(default_factory=list, max_length=50)
    steps: str = Field(min_length=1, max_length=STEPS_MAX)


class KnowledgeArticle(SQLModel, table=True):
    """A specialist's article: the fault codes and models it covers and the steps that fix it."""

    __tablename__ = "knowledge_article"

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=TITLE_MAX)
    error_codes: list[str] = Field(
        default_factory=list, sa_column=sa.Column(JSONType, nullable=False)
    )
    models: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONType, nullable=False))
    #: The codes and models as one space-separated text, for the full-text search.
    keywords: str = Field(default="", max_length=8000)
    steps: str = Field(max_length=STEPS_MAX)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class KnowledgeArticlePublic(SQLModel):
    """An article as the API shows it."""

    id: int
    title: str
    error_codes: list[str]
    models: list[str]
    steps: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class KnowledgeHit(SQLModel):
    """One search hit: an article, or the resolution note of a closed incident."""

    kind: Literal["article", "note"]
    id: int
    title: str
    snippet: str
    error_codes: list[str]
    rank: float
    #: A note's incident device (``None`` for an article).
    device_id: str | None = None


class KnowledgeHits(SQLModel):
    """``GET /api/v1/knowledge?q=``: the best hits first."""

    items: list[KnowledgeHit]
    count: int
