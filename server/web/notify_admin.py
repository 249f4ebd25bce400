"""The administrators' notifications page: the rules in force, adding and removing one,
a test message, and the outbox (what was sent, what failed and why).

The same operations as ``/api/v1/notify`` (:mod:`server.notify.store`), by plain form
posts (CSRF-checked), audited. Rules of ``[[server.notify]]`` are listed but changed
only in ``server.toml``. A new webhook rule's signing secret is shown once, on the
page that answers its creation, never again.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session

from server import i18n
from server.api.deps import SessionDep, checked_form, client_address
from server.config import ServerSettings
from server.models import DEVICE_TYPES
from server.notify import store
from server.notify.rules import EVENT_KINDS
from server.notify.store import NotifyRuleIn, NotifyRulePublic
from server.upkeep import NOTIFY_JOB
from server.web.auth import Viewer, ViewerDep, forbidden
from server.web.templating import render
from server.web.texts import N_, NOTIFY_PAGE_NAMES
from shared.errors import Conflict, InvalidInput, NotFound
from shared.wire import SEVERITIES

router = APIRouter(prefix="/admin/notify", include_in_schema=False)
OUTBOX_PAGE = 50
_FORM_MAX = 16_384
#: What the page says after an action (``/admin/notify?done=<key>&rule=<name>&count=<n>``):
#: texts of the catalogs, composed as the page renders, in the viewer's language.
DONE_TEXTS: dict[str, str] = {
    "added": N_("Rule %(rule)s added."),
    "removed": N_("Rule %(rule)s removed."),
    "tested": N_("%(count)s test message(s) queued for %(rule)s."),
}


def _page(
    request: Request,
    session: Session,
    viewer: Viewer,
    *,
    error: str | None = None,
    done: str | None = None,
    done_args: dict[str, str] | None = None,
    created: NotifyRulePublic | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings: ServerSettings = request.app.state.settings
    outbox, total = store.list_outbox(session, status=None, limit=OUTBOX_PAGE, offset=0)
    return render(
        request,
        "admin_notify.html",
        {
            "viewer": viewer,
            "title": "Admin: notifications",
            "nav": "admin",
            "tab": "notify",
            "rules": store.list_rules(session, settings),
            "outbox": outbox,
            "outbox_total": total,
            "event_kinds": EVENT_KINDS,
            "severities": SEVERITIES,
            "device_types": DEVICE_TYPES,
            "smtp_ready": bool(settings.smtp.host),
            "languages": i18n.LANGUAGE_NAMES,
            "error": error,
            "done": done,
            "done_args": done_args or {},
            "created": created,
            **NOTIFY_PAGE_NAMES,
        },
        status_code=status_code,
    )


@router.get("", response_class=HTMLResponse)
def notify_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
    rule: Annotated[str, Query(max_length=64)] = "",
    count: Annotated[int, Query(ge=0, le=16)] = 0,
) -> HTMLResponse:
    """The rules and the outbox."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    text = DONE_TEXTS.get(done or "")
    return _page(request, session, viewer, done=text, done_args={"rule": rule, "count": str(count)})


async def _form(request: Request) -> dict[str, list[str]]:
    form = await checked_form(request)
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value[:_FORM_MAX])
    return fields


def _words(values: list[str]) -> list[str]:
    """Comma- or line-separated entries of text fields, stripped, without blanks."""
    return [
        part.strip()
        for value in values
        for part in value.replace("\n", ",").split(",")
        if part.strip()
    ]


def _back(done: str, rule: str, count: int = 0) -> RedirectResponse:
    """Back to the page, which says what was done (a key of :data:`DONE_TEXTS`)."""
    query = {"done": done, "rule": rule, **({"count": str(count)} if count else {})}
    return RedirectResponse(
        f"/admin/notify?{urlencode(query)}", status_code=status.HTTP_303_SEE_OTHER
    )


@router.post("/rules", response_class=HTMLResponse)
async def add_rule(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """Add a rule from the form (audited); a webhook rule's secret is shown once."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    form = await _form(request)
    one = {key: values[0].strip() for key, values in form.items() if values}
    try:
        body = NotifyRuleIn.model_validate(
            {
                "name": one.get("name", ""),
                "events": form.get("events", []),
                "severity": one.get("severity") or "warning",
                "device_types": form.get("device_types", []),
                "customers": _words(form.get("customers", [])),
                "codes": _words(form.get("codes", [])),
                "webhook_url": one.get("webhook_url") or None,
                "email_to": _words(form.get("email_to", [])),
                "hold_s": one.get("hold_s") or 0,
                "language": one.get("language") or "en",
            }
        )
        created = await run_in_threadpool(
            store.create_rule,
            session,
            request.app.state.settings,
            body,
            actor=viewer.user.username,
            source_ip=client_address(request),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return _page(request, session, viewer, error=f"{where}: {first['msg']}", status_code=422)
    except (InvalidInput, Conflict) as exc:
        code = 409 if isinstance(exc, Conflict) else 422
        return _page(request, session, viewer, error=str(exc), status_code=code)
    return _page(
        request,
        session,
        viewer,
        done=DONE_TEXTS["added"],
        done_args={"rule": created.name},
        created=created,
    )


@router.post("/rules/{name}/delete", response_class=HTMLResponse)
async def delete_rule(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Remove a rule made here or through the API (audited)."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    await _form(request)
    try:
        await run_in_threadpool(
            store.delete_rule,
            session,
            request.app.state.settings,
            name[:64],
            actor=viewer.user.username,
            source_ip=client_address(request),
        )
    except (NotFound, Conflict) as exc:
        code = 404 if isinstance(exc, NotFound) else 409
        return _page(request, session, viewer, error=str(exc), status_code=code)
    return _back("removed", name[:64])


@router.post("/rules/{name}/test", response_class=HTMLResponse)
async def test_rule(
    name: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """Queue a test message to each of the rule's channels (audited); the outbox shows it."""
    if not viewer.can("admin"):
        return forbidden(request, viewer, "admin")
    await _form(request)
    rules = await run_in_threadpool(
        store.all_rules, request.app.state.engine, request.app.state.settings
    )
    try:
        queued = await run_in_threadpool(
            store.queue_test,
            session,
            rules,
            name[:64],
            actor=viewer.user.username,
            source_ip=client_address(request),
        )
    except NotFound as exc:
        return _page(request, session, viewer, error=str(exc), status_code=404)
    upkeep = getattr(request.app.state, "upkeep", None)
    if upkeep is not None:
        upkeep.wake(NOTIFY_JOB)
    return _back("tested", name[:64], queued)
