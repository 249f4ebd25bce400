"""The desk's "who is calling?" box: devices matching what the operator types, fast.

``GET /api/v1/devices?q=`` answers the same question with a count and paging; this
type-ahead wants the first few matches within a keystroke, so it reads the fleet
once and stops early: one scan with plain ``LIKE`` filters (no per-row string
rewriting in SQL), where a phone number matches by a loose digits pattern
(``%4%4%2%0%...``) that the exact digits check below then confirms.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session, select

from server import crud
from server.api.deps import SESSION_COOKIE, SessionDep
from server.models import Device, DevicePublic
from server.scope import EVERYTHING, Scope

router = APIRouter(include_in_schema=False)

#: Matches the box shows.
SHOWN = 8
#: Candidates read before the exact check (a loose phone pattern may over-match).
CANDIDATES = 200
_DEVICE: sa.Table = Device.__table__  # type: ignore[attr-defined]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def find_devices(
    session: Session, text: str, scope: Scope = EVERYTHING
) -> tuple[list[Device], int, bool]:
    """Devices matching ``text`` as the API's ``q`` does; ``(first ones, found, more)``."""
    query = text.strip().lower()
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    c = _DEVICE.c
    options: list[Any] = [
        sa.func.lower(c.id).like(pattern, escape="\\"),
        sa.func.lower(c.serial).like(pattern, escape="\\"),
        sa.func.lower(c.customer).like(pattern, escape="\\"),
        sa.func.lower(c.site).like(pattern, escape="\\"),
    ]
    digits = _digits(query)
    wanted = digits.lstrip("0") or digits
    if len(digits) >= 3:
        options.append(c.contact_phone.like("%" + "%".join(wanted) + "%"))
    devices = list(
        session.exec(select(Device).where(sa.or_(*options), scope.devices()).limit(CANDIDATES + 1))
    )
    more = len(devices) > CANDIDATES
    found = []
    for device in devices[:CANDIDATES]:
        texts = (device.id, device.serial, device.customer, device.site or "")
        if any(query in value.lower() for value in texts) or (
            len(digits) >= 3 and wanted in _digits(device.contact_phone or "")
        ):
            found.append(device)
    found.sort(key=lambda d: d.id)
    return found[:SHOWN], len(found), more


@router.get("/desk/find")
def find(
    request: Request, session: SessionDep, q: Annotated[str, Query(max_length=128)] = ""
) -> JSONResponse:
    """The first devices matching ``q`` (JSON for the desk's script)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    user = crud.user_for_token(session, cookie) if cookie else None
    if user is None:
        return JSONResponse({"detail": "not authenticated"}, status_code=401)
    if len(q.strip()) < 2:
        return JSONResponse({"items": [], "count": 0, "more": False})
    shown, count, more = find_devices(session, q, Scope.of(user))
    return JSONResponse(
        {
            "items": [DevicePublic.model_validate(d).model_dump(mode="json") for d in shown],
            "count": count,
            "more": more,
        }
    )
