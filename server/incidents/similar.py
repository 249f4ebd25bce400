"""Similar past cases: what closed incidents with the same error code teach (docs/kpis.md).

For an error code (and a device model), the closed incidents of that code that
were real faults (``resolution`` not ``no_fault``, docs/kpis.md's set F): how
many, the share fixed remotely, the median time to restore of remote fixes and
of dispatches, and the resolution notes of the fixes that worked, most frequent
first, then most recent. The device's own model is asked first; when no closed
case of that model exists, every model answers.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from server.models import Device, Incident
from server.scope import EVERYTHING, Scope

#: The most recent closed cases one answer reads (a bound on the work of one request).
MAX_CASES = 5000
#: The fixes an answer lists.
MAX_FIXES = 5
#: The notes of these resolutions are fixes that worked.
FIXED = ("remote", "phone", "dispatch")
_SPACES = re.compile(r"\s+")


class Fix(BaseModel):
    """A resolution note that fixed the fault, how often it did and when it last did."""

    note: str
    count: int
    last_closed_at: datetime


class CaseFigures(BaseModel):
    """The figures of one set of closed cases."""

    count: int
    remote_share: float | None
    median_ttr_remote_hours: float | None
    median_ttr_dispatch_hours: float | None


class SimilarCases(CaseFigures):
    """``GET /api/v1/incidents/{id}/similar``: the past cases of an error code.

    ``scope`` says which set the top-level figures and ``fixes`` describe:
    ``model`` (closed cases on the same model), or ``any`` (every model, when
    the model has none or none was given). ``any_model`` has the figures over
    every model in both cases.
    """

    error_code: str
    model: str | None
    scope: str
    fixes: list[Fix]
    any_model: CaseFigures


@dataclass
class _Case:
    model: str
    resolution: str
    ttr_hours: float
    closed_at: datetime
    note: str | None


@dataclass
class _Figures:
    cases: list[_Case] = field(default_factory=list)

    def figures(self) -> CaseFigures:
        count = len(self.cases)
        remote = [c.ttr_hours for c in self.cases if c.resolution == "remote"]
        dispatch = [c.ttr_hours for c in self.cases if c.resolution == "dispatch"]
        return CaseFigures(
            count=count,
            remote_share=round(len(remote) / count, 4) if count else None,
            median_ttr_remote_hours=_median(remote),
            median_ttr_dispatch_hours=_median(dispatch),
        )

    def fixes(self) -> list[Fix]:
        grouped: dict[str, Fix] = {}
        for case in self.cases:
            note = (case.note or "").strip()
            if not note:
                continue
            key = _SPACES.sub(" ", note).casefold()
            known = grouped.get(key)
            if known is None:
                grouped[key] = Fix(note=note, count=1, last_closed_at=case.closed_at)
            else:
                known.count += 1
                if case.closed_at > known.last_closed_at:
                    known.note, known.last_closed_at = note, case.closed_at
        ranked = sorted(grouped.values(), key=lambda f: (-f.count, -f.last_closed_at.timestamp()))
        return ranked[:MAX_FIXES]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def similar_cases(
    session: Session,
    *,
    error_code: str,
    model: str | None,
    exclude_id: int | None = None,
    scope: Scope = EVERYTHING,
) -> SimilarCases:
    """The past cases of ``error_code`` on ``scope``'s devices, the same ``model``'s first."""
    query = (
        sa.select(
            col(Device.model),
            col(Incident.resolution),
            col(Incident.down_at),
            col(Incident.restored_at),
            col(Incident.closed_at),
            col(Incident.resolution_note),
        )
        .join(Device, col(Device.id) == col(Incident.device_id))
        .where(
            col(Incident.error_code) == error_code,
            col(Incident.closed_at).is_not(None),
            col(Incident.restored_at).is_not(None),
            col(Incident.resolution).in_(FIXED),
            scope.devices(),
        )
        .order_by(col(Incident.closed_at).desc())
        .limit(MAX_CASES)
    )
    if exclude_id is not None:
        query = query.where(col(Incident.id) != exclude_id)
    every = _Figures()
    same = _Figures()
    for row_model, resolution, down_at, restored_at, closed_at, note in session.execute(query):
        ttr = max(0.0, (restored_at - down_at).total_seconds() / 3600)
        case = _Case(row_model, resolution or "", ttr, closed_at, note)
        every.cases.append(case)
        if model is not None and row_model == model:
            same.cases.append(case)
    chosen, basis = (same, "model") if same.cases else (every, "any")
    return SimilarCases(
        error_code=error_code,
        model=model,
        scope=basis,
        fixes=chosen.fixes(),
        any_model=every.figures(),
        **chosen.figures().model_dump(),
    )


def model_of(session: Session, device_id: str) -> str | None:
    """The model of a device (``None`` when there is no such device)."""
    return session.exec(select(Device.model).where(Device.id == device_id)).first()
