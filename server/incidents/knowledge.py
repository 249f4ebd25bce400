"""The fault-case knowledge base: specialists' articles and a full-text search.

The search covers the articles (title, error codes, models, steps) and the
resolution notes of incidents (with their error code), through the database's
own full-text index, never a ``LIKE`` scan:

- SQLite: the FTS5 table ``knowledge_fts`` (kept by triggers, migration 0011),
  ranked by ``bm25``. Each word of the query becomes a quoted FTS5 string, so
  the query language (``NEAR``, ``*``, column filters...) is never the user's:
  all words must match, a hyphenated code such as ``SC-541`` as a phrase.
- PostgreSQL: ``websearch_to_tsquery('simple', q)`` against the GIN-indexed
  ``to_tsvector('simple', ...)`` expressions, ranked by ``ts_rank``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.models import (
    Incident,
    KnowledgeArticle,
    KnowledgeArticleCreate,
    KnowledgeArticlePublic,
    KnowledgeHit,
    KnowledgeHits,
)
from server.scope import EVERYTHING, Scope
from shared.errors import NotFound

#: The longest query searched (longer ones are refused by the API).
QUERY_MAX = 200
SNIPPET_CHARS = 240
_WORDS = re.compile(r"[^\s\"]+")
#: Hits as ``(kind, id, rank)``, the best first.
Ranked = list[tuple[str, int, float]]
#: The exact expressions the PostgreSQL GIN indexes of migration 0011 were built on.
NOTE_DOCUMENT = "to_tsvector('simple', coalesce(error_code, '') || ' ' || resolution_note)"
ARTICLE_DOCUMENT = "to_tsvector('simple', title || ' ' || keywords || ' ' || steps)"


def _clean(values: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        value = value.strip()[:128]
        if value and value not in seen:
            seen.append(value)
    return seen


def create_article(
    session: Session, *, data: KnowledgeArticleCreate, author: str
) -> KnowledgeArticle:
    """Record an article (commits)."""
    codes, models = _clean(data.error_codes), _clean(data.models)
    article = KnowledgeArticle(
        title=data.title.strip(),
        error_codes=codes,
        models=models,
        keywords=" ".join([*codes, *models])[:8000],
        steps=data.steps,
        created_by=author,
    )
    session.add(article)
    session.commit()
    session.refresh(article)
    return article


def get_article(session: Session, *, article_id: int) -> KnowledgeArticle:
    """The article with that id.

    Raises:
        NotFound: when there is none.
    """
    article = session.get(KnowledgeArticle, article_id)
    if article is None:
        msg = f"no knowledge article {article_id}"
        raise NotFound(msg)
    return article


def to_public(article: KnowledgeArticle) -> KnowledgeArticlePublic:
    """The API's view of an article."""
    return KnowledgeArticlePublic.model_validate(article.model_dump())


def fts5_query(text: str) -> str:
    """The user's words as an FTS5 query that means only "all of these words"."""
    return " ".join(f'"{word}"' for word in _WORDS.findall(text))


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def search(
    session: Session, *, q: str, limit: int = 20, scope: Scope = EVERYTHING
) -> KnowledgeHits:
    """Articles and resolution notes matching every word of ``q``, the best first; the
    notes of incidents outside ``scope`` are left out (and out of ``count``)."""
    if session.get_bind().dialect.name == "postgresql":
        ranked, total = _search_postgresql(session, q, limit)
    else:
        ranked, total = _search_sqlite(session, q, limit)
    notes = {i for kind, i, _rank in ranked if kind == "note"}
    articles = {i for kind, i, _rank in ranked if kind == "article"}
    by_incident = {
        row.id: row
        for row in session.exec(
            select(Incident).where(
                col(Incident.id).in_(notes), scope.where_device(col(Incident.device_id))
            )
        ).all()
    }
    hidden = len(notes - set(by_incident))
    by_article = {
        row.id: row
        for row in session.exec(
            select(KnowledgeArticle).where(col(KnowledgeArticle.id).in_(articles))
        ).all()
    }
    items: list[KnowledgeHit] = []
    for kind, ident, rank in ranked:
        if kind == "note" and (incident := by_incident.get(ident)) is not None:
            code = incident.error_code
            items.append(
                KnowledgeHit(
                    kind="note",
                    id=ident,
                    title=f"Incident #{ident}" + (f" ({code})" if code else ""),
                    snippet=_snippet(incident.resolution_note or ""),
                    error_codes=[code] if code else [],
                    rank=rank,
                    device_id=incident.device_id,
                )
            )
        elif kind == "article" and (article := by_article.get(ident)) is not None:
            items.append(
                KnowledgeHit(
                    kind="article",
                    id=ident,
                    title=article.title,
                    snippet=_snippet(article.steps),
                    error_codes=list(article.error_codes),
                    rank=rank,
                )
            )
    return KnowledgeHits(items=items, count=max(0, total - hidden))


def _search_sqlite(
    session: Session, q: str, limit: int
) -> tuple[list[tuple[str, int, float]], int]:
    query = fts5_query(q)
    if not query:
        return [], 0
    params: dict[str, Any] = {"q": query, "limit": limit}
    rows = session.execute(
        sa.text(
            "SELECT rowid, bm25(knowledge_fts) AS rank FROM knowledge_fts "
            "WHERE knowledge_fts MATCH :q ORDER BY rank LIMIT :limit"
        ),
        params,
    ).all()
    total = session.execute(
        sa.text("SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH :q"), params
    ).scalar_one()
    ranked = [
        ("article" if rowid % 2 else "note", rowid // 2, round(-float(rank), 6))
        for rowid, rank in rows
    ]
    return ranked, int(total)


def _search_postgresql(session: Session, q: str, limit: int) -> tuple[Ranked, int]:
    params: dict[str, Any] = {"q": q, "limit": limit}
    # Only the two fixed expression texts are joined in (they must match the indexes).
    matches = (
        f"SELECT 'note' AS kind, id, ts_rank({NOTE_DOCUMENT}, query) AS rank "  # noqa: S608
        f"FROM incident, websearch_to_tsquery('simple', :q) AS query "
        f"WHERE resolution_note IS NOT NULL AND {NOTE_DOCUMENT} @@ query "
        f"UNION ALL SELECT 'article', id, ts_rank({ARTICLE_DOCUMENT}, query) "
        f"FROM knowledge_article, websearch_to_tsquery('simple', :q) AS query "
        f"WHERE {ARTICLE_DOCUMENT} @@ query"
    )
    rows = session.execute(
        sa.text(f"SELECT kind, id, rank FROM ({matches}) AS m "  # noqa: S608
                "ORDER BY rank DESC, id DESC LIMIT :limit"),
        params,
    ).all()  # fmt: skip
    total = session.execute(
        sa.text(f"SELECT count(*) FROM ({matches}) AS m"),  # noqa: S608
        params,
    ).scalar_one()
    return [(kind, int(ident), round(float(rank), 6)) for kind, ident, rank in rows], int(total)
