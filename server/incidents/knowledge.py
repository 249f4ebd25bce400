"""The fault-case knowledge base: specialists' articles and a full-text search.

The search covers the articles (title, error codes, models, steps) and the
resolution notes of incidents (with their error code), through the database's
own full-text index, never a ``LIKE`` scan:

- SQLite: the FTS5 table ``knowledge_fts`` (kept by triggers, migration 0011),
  ranked by ``bm25``. Each word of the query becomes a quoted FTS5 string, so
  the query language (``NEAR``, ``*``, column filters...) is never the user's:
  all words must match, a hyphenated code such as ``SC-541`` as a phrase.
- PostgreSQL: ``websearch_to_tsquery('simple', q)`` against the GIN-indexed
  stored ``tsvector`` columns ``incident.note_search`` and
  ``knowledge_article.article_search`` (migration 0020), ranked by ``ts_rank``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from server.models import (
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
#: How many of the newest matching notes are ranked and counted (every matching article is).
RANKED_NOTES = 1000
#: The words of a note (with its error code); PostgreSQL stores them as the generated,
#: GIN-indexed column :data:`NOTE_VECTOR_COLUMN` (migration 0020).
NOTE_DOCUMENT = "to_tsvector('simple', coalesce(error_code, '') || ' ' || resolution_note)"
NOTE_VECTOR_COLUMN = "note_search"
#: The words of an article; stored on PostgreSQL as :data:`ARTICLE_VECTOR_COLUMN`.
ARTICLE_VECTOR_COLUMN = "article_search"
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
    notes of incidents outside ``scope`` are left out (and out of ``count``).

    One statement answers it (docs/benchmarks.md "Knowledge search"): the hits
    with what they show, and how many match. Every matching article is ranked
    and counted; of the notes, the :data:`RANKED_NOTES` newest matches (a common
    word matches a hundred thousand notes, and ranking or counting them all
    costs more than the answer is worth: among notes that share a common word,
    the newest fixes are the useful ones). So ``count`` is every matching
    article plus the matching notes up to :data:`RANKED_NOTES`: that many notes
    means "at least".
    """
    devices = None if scope.unrestricted else _devices_in(session, scope)
    if session.get_bind().dialect.name == "postgresql":
        rows = _search_postgresql(session, q, limit, devices)
    else:
        rows = _search_sqlite(session, q, limit, devices)
    items: list[KnowledgeHit] = []
    total = 0
    for row in rows:
        total = int(row.total)
        rank = round(float(row.rank), 6)
        if row.kind == "note":
            code = row.title or None
            items.append(
                KnowledgeHit(
                    kind="note",
                    id=int(row.id),
                    title=f"Incident #{row.id}" + (f" ({code})" if code else ""),
                    snippet=_snippet(row.body or ""),
                    error_codes=[code] if code else [],
                    rank=rank,
                    device_id=row.device_id,
                )
            )
        else:
            codes = row.codes if isinstance(row.codes, list) else json.loads(row.codes or "[]")
            items.append(
                KnowledgeHit(
                    kind="article",
                    id=int(row.id),
                    title=row.title,
                    snippet=_snippet(row.body),
                    error_codes=[str(c) for c in codes],
                    rank=rank,
                )
            )
    return KnowledgeHits(items=items, count=total)


def _devices_in(session: Session, scope: Scope) -> str:
    """The ids of the devices in ``scope`` as an SQL subquery, for the searches' text.

    The scope's own filter (:meth:`Scope.device_ids`), compiled for this database
    with its customers and regions as literals (names checked against
    :data:`server.scope.NUMBER_PATTERN` and :data:`server.scope.REGION_PATTERN` when
    stored, and quoted by SQLAlchemy), so the database resolves the scope in the
    search's own statement: no list of every device id in scope goes with it.
    """
    statement = scope.device_ids()
    dialect = session.get_bind().dialect
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _search_sqlite(
    session: Session, q: str, limit: int, devices: str | None = None
) -> Sequence[sa.Row[Any]]:
    """FTS5: rowid ``2 * id`` is a note, ``2 * id + 1`` an article (migration 0011).

    ``rank`` (bm25, lower is better) is computed only for the rows each
    ``SELECT`` returns: every matching article, the newest notes.
    """
    query = fts5_query(q)
    if not query:
        return []
    params: dict[str, Any] = {"q": query, "limit": limit, "pool": RANKED_NOTES}
    scoped = ""
    if devices is not None:
        # Only the notes of incidents on devices in the user's scope (a subquery).
        subquery = f"SELECT id FROM incident WHERE device_id IN ({devices})"  # noqa: S608 - see _devices_in
        scoped = f"AND rowid / 2 IN ({subquery}) "
    return session.execute(
        sa.text(
            "WITH hits AS MATERIALIZED ("  # noqa: S608 - only fixed texts are joined in
            "SELECT rowid, rank FROM knowledge_fts "
            "WHERE knowledge_fts MATCH :q AND rowid % 2 = 1 "
            "UNION ALL SELECT * FROM ("
            "SELECT rowid, rank FROM knowledge_fts "
            f"WHERE knowledge_fts MATCH :q AND rowid % 2 = 0 {scoped}"
            "ORDER BY rowid DESC LIMIT :pool)"
            "), best AS (SELECT rowid, rank FROM hits ORDER BY rank, rowid DESC LIMIT :limit) "
            "SELECT CASE WHEN b.rowid % 2 = 1 THEN 'article' ELSE 'note' END AS kind, "
            "b.rowid / 2 AS id, -b.rank AS rank, "
            "coalesce(a.title, i.error_code) AS title, "
            "coalesce(a.steps, i.resolution_note) AS body, "
            "i.device_id AS device_id, a.error_codes AS codes, "
            "(SELECT count(*) FROM hits) AS total "
            "FROM best AS b "
            "LEFT JOIN knowledge_article AS a ON b.rowid % 2 = 1 AND a.id = b.rowid / 2 "
            "LEFT JOIN incident AS i ON b.rowid % 2 = 0 AND i.id = b.rowid / 2 "
            "ORDER BY b.rank, b.rowid DESC"
        ),
        params,
    ).all()


def _search_postgresql(
    session: Session, q: str, limit: int, devices: str | None = None
) -> Sequence[sa.Row[Any]]:
    """``websearch_to_tsquery`` against the stored, GIN-indexed vectors of migration 0020.

    The query is written inline (not joined in from ``FROM``) so that each
    ``@@`` can use its index; only fixed texts (the columns' names) are joined in.
    """
    query = "websearch_to_tsquery('simple', :q)"
    params: dict[str, Any] = {"q": q, "limit": limit, "pool": RANKED_NOTES}
    scoped = ""
    if devices is not None:
        # Only the notes of incidents on devices in the user's scope (a subquery).
        scoped = f"AND device_id IN ({devices}) "
    notes = (
        f"SELECT id, error_code, resolution_note, device_id, {NOTE_VECTOR_COLUMN} AS vector "  # noqa: S608
        f"FROM incident WHERE {NOTE_VECTOR_COLUMN} @@ {query} {scoped}"
        "ORDER BY id DESC LIMIT :pool"
    )
    articles = (
        f"SELECT id, title, steps, error_codes, {ARTICLE_VECTOR_COLUMN} AS vector "  # noqa: S608
        f"FROM knowledge_article WHERE {ARTICLE_VECTOR_COLUMN} @@ {query}"
    )
    sql = (
        f"WITH notes AS MATERIALIZED ({notes}), articles AS MATERIALIZED ({articles}), "  # noqa: S608
        f"hits AS (SELECT 'note' AS kind, id, ts_rank(vector, {query}) AS rank, "
        "error_code AS title, resolution_note AS body, device_id, NULL::jsonb AS codes "
        f"FROM notes UNION ALL SELECT 'article', id, ts_rank(vector, {query}), title, steps, "
        "NULL, error_codes::jsonb FROM articles) "
        "SELECT kind, id, rank, title, body, device_id, codes, "
        "(SELECT count(*) FROM notes) + (SELECT count(*) FROM articles) AS total "
        "FROM hits ORDER BY rank DESC, id DESC LIMIT :limit"
    )
    return session.execute(sa.text(sql), params).all()
