"""Notification rules and the outbox (admins): list, add, remove, test; what was sent.

Rules of ``[[server.notify]]`` are listed (``origin: config``) but changed only in
``server.toml``. Every change and test is audited; a webhook URL's credentials are
shown masked, and a new webhook rule's signing secret only once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from server.api.deps import AdminUser, SessionDep, SettingsDep, client_address
from server.notify import store
from server.notify.store import NotifyOutboxPublic, NotifyRuleIn, NotifyRulePublic
from server.upkeep import NOTIFY_JOB

router = APIRouter(prefix="/notify", tags=["notify"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such rule"},
    409: {"description": "a rule of that name exists, or it is in server.toml"},
}


class NotifyRulesPublic(BaseModel):
    """Every rule in force."""

    items: list[NotifyRulePublic]
    count: int


class NotifyOutboxList(BaseModel):
    """A page of the outbox, newest first."""

    items: list[NotifyOutboxPublic]
    count: int


class NotifyTestQueued(BaseModel):
    """How many test messages were queued (one per channel of the rule)."""

    rule: str
    queued: int


def _wake(request: Request) -> None:
    upkeep = getattr(request.app.state, "upkeep", None)
    if upkeep is not None:
        upkeep.wake(NOTIFY_JOB)


@router.get("/rules")
def list_notify_rules(
    session: SessionDep, settings: SettingsDep, _admin: AdminUser
) -> NotifyRulesPublic:
    """The notification rules: server.toml's, then the database's."""
    items = store.list_rules(session, settings)
    return NotifyRulesPublic(items=items, count=len(items))


@router.post("/rules", status_code=201, responses=_ERRORS)
async def create_notify_rule(
    body: NotifyRuleIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> NotifyRulePublic:
    """Add a rule; a webhook rule's signing secret is in this answer only."""
    return await run_in_threadpool(
        store.create_rule,
        session,
        settings,
        body,
        actor=admin.username,
        source_ip=client_address(request),
    )


@router.delete("/rules/{name}", status_code=204, responses=_ERRORS)
async def delete_notify_rule(
    name: str, request: Request, session: SessionDep, settings: SettingsDep, admin: AdminUser
) -> Response:
    """Remove a rule made through the API (its messages still queued are given up)."""
    await run_in_threadpool(
        store.delete_rule,
        session,
        settings,
        name,
        actor=admin.username,
        source_ip=client_address(request),
    )
    return Response(status_code=204)


@router.post("/rules/{name}/test", status_code=202, responses=_ERRORS)
async def test_notify_rule(
    name: str, request: Request, session: SessionDep, admin: AdminUser
) -> NotifyTestQueued:
    """Queue a test message to each of the rule's channels (see the outbox for the result)."""
    engine = request.app.state.engine
    settings = request.app.state.settings
    rules = await run_in_threadpool(store.all_rules, engine, settings)
    queued = await run_in_threadpool(
        store.queue_test,
        session,
        rules,
        name,
        actor=admin.username,
        source_ip=client_address(request),
    )
    _wake(request)
    return NotifyTestQueued(rule=name, queued=queued)


@router.get("/outbox")
def list_notify_outbox(
    session: SessionDep,
    _admin: AdminUser,
    status: Literal["queued", "sent", "dead", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> NotifyOutboxList:
    """Notification messages, newest first: status, attempts, the last error."""
    items, count = store.list_outbox(session, status=status, limit=limit, offset=offset)
    return NotifyOutboxList(items=items, count=count)
