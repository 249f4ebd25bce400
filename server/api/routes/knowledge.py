"""The fault-case knowledge base: articles, and a full-text search over them and notes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from server.api.deps import ManagerUser, OperatorUser, ScopeDep, SessionDep
from server.api.responses import DB_INT_MAX, PLAIN_TEXT
from server.incidents import knowledge as service
from server.models import KnowledgeArticleCreate, KnowledgeArticlePublic, KnowledgeHits

router = APIRouter(prefix="/knowledge", tags=["knowledge"])


@router.get("")
def search_knowledge(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=service.QUERY_MAX,
            pattern=PLAIN_TEXT,
            description="words (control characters are refused)",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> KnowledgeHits:
    """Articles and resolution notes containing every word of ``q`` (full-text), best first."""
    return service.search(session, q=q, limit=limit, scope=scope)


@router.post("/articles", status_code=status.HTTP_201_CREATED)
def create_article(
    body: KnowledgeArticleCreate, session: SessionDep, user: ManagerUser
) -> KnowledgeArticlePublic:
    """Write an article (managers: the specialists who write them)."""
    article = service.create_article(session, data=body, author=user.username)
    return service.to_public(article)


@router.get("/articles/{article_id}")
def get_article(
    article_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)], session: SessionDep, _user: OperatorUser
) -> KnowledgeArticlePublic:
    """One article."""
    return service.to_public(service.get_article(session, article_id=article_id))
