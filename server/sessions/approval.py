"""The site's approval of a session from the web: who may decide, the signed decision, links.

A device whose policy says ``consent = "required"`` holds a session in
``awaiting_consent`` until the site decides. Besides the device's own
``fieldlink agent approve|deny``, a site person may decide on the web: an admin
or a ``site`` user of the device's customer (:func:`can_approve`) through the
console or ``POST /api/v1/sessions/{id}/approve|deny``, or a site contact with
no account through a one-time approval link. The server does not decide for the
agent: it signs a ``session.decide`` command (the same Ed25519 key and checks as
every command) and the agent takes it or refuses it (``consent = "local"``
takes only the device's own decision: ``local_consent``). Only once the agent
has taken it does the session record ``approved_by``, ``approved_at`` and
``approved_via``, and the audit log a ``session.approve`` or ``session.deny``
entry naming who decided; a refusal is audited too (``session.approve.refused``).

Approval links: the token (256 random bits) is in the URL only, stored as its
SHA-256 hash; a link names one session, expires (at the latest when the session
may no longer dial) and serves once: it is claimed by a conditional ``UPDATE``
before the decision is sent, so two clicks decide once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server import audit
from server.crud import InvalidInput
from server.models import Device, RemoteSession, SessionApprovalLink, User, role_at_least
from server.scope import Scope
from server.security import hash_token, tokens_equal
from server.sessions import repository
from server.sessions.service import SessionService, is_service_name
from shared import wire
from shared.errors import Conflict, UnavailableError
from shared.ids import new_token, utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: States in which a session may still be decided on.
UNDECIDED: Final = ("requested", "awaiting_consent")
#: How long the server waits for the agent to take (or refuse) a decision.
DECISION_RESULT_TIMEOUT_S: Final = 15.0
#: How long a decision answers after the agent took it, waiting for the session to move.
MOVE_WAIT_S: Final = 10.0
#: What the agent's refusals of ``session.decide`` mean, for people.
_REFUSALS: Final = {
    "local_consent": "the device takes only a local approval (its policy says "
    'consent = "local"): approve it on the device with `fieldlink agent approve`',
    "not_awaiting": "the session is not awaiting consent on the device",
    "unknown_session": "the device holds no such session (any more)",
    "not_allowed": "the device does not allow those services",
    "invalid": "the device found the decision malformed",
}


class DecisionRefused(Conflict):
    """The agent refused the decision (its policy, or the session's state)."""


def can_approve(user: User, device: Device) -> bool:
    """Whether ``user`` may approve or deny the sessions of ``device``.

    An enabled admin may; a ``site`` user may for the devices of the customers they
    are bound to (:class:`server.scope.Scope`; a site user bound to none may not);
    nobody else may (an operator never approves their own or a colleague's session).
    """
    if user.disabled:
        return False
    if role_at_least(user.role, "admin"):
        return True
    if user.role != "site":
        return False
    scope = Scope.of(user)
    return not scope.nothing and device.customer_number in scope.customers


@dataclass(frozen=True, slots=True)
class Decision:
    """A site person's decision on one session.

    Attributes:
        verdict: ``approve`` or ``deny``.
        approver: Who decided, as the session and the audit log name them.
        via: ``web`` (console or API) or ``link`` (a one-time approval link).
        reason: Why it was denied.
        services: An approval's narrower services (``None``: as asked).
        max_duration_s: An approval's shorter maximum duration (``None``: as asked).
        audit: More for the audit entry (the link's id and its creator).
    """

    verdict: wire.SessionVerdict
    approver: str
    via: Literal["web", "link"] = "web"
    reason: str = ""
    services: list[str] | None = None
    max_duration_s: float | None = None
    audit: dict[str, Any] = field(default_factory=dict)

    def body(self, session_id: str) -> dict[str, Any]:
        """The ``session.decide`` command's body."""
        body: dict[str, Any] = {
            "session_id": session_id,
            "verdict": self.verdict,
            "approver": self.approver[: wire.MAX_APPROVER_LENGTH],
            "via": self.via,
        }
        if self.reason:
            body["reason"] = self.reason[: wire.MAX_REASON_LENGTH]
        if self.services is not None:
            body["services"] = self.services
        if self.max_duration_s is not None:
            body["max_duration_s"] = self.max_duration_s
        return body


async def decide(
    service: SessionService,
    session_id: str,
    decision: Decision,
    *,
    source_ip: str | None,
) -> RemoteSession:
    """Send a site person's decision to the session's agent; record it once taken.

    Returns:
        The session's row after the agent took the decision (and the session moved on,
        or :data:`MOVE_WAIT_S` passed).

    Raises:
        NotFound: Unknown session.
        Conflict: The session is past consent (``DecisionRefused``: the agent refused it).
        InvalidInput: A malformed service name.
        UnavailableError: Commands are off, the broker is down or the device did not answer.
    """
    if decision.services is not None:
        bad = [name for name in decision.services if not is_service_name(name)]
        if bad:
            msg = f"services: {bad[0]!r} is not a service name"
            raise InvalidInput(msg)
    row = await _db(service, repository.get_session, session_id)
    if row.state not in UNDECIDED:
        msg = f"session {session_id} is {row.state}: there is no consent to give"
        raise Conflict(msg)
    commands = service.commands
    if commands is None:
        msg = "approvals need the command key: run `fieldlink ca init` on the server"
        raise UnavailableError(msg)
    agent_id = await _db(service, repository.agent_of, row.device_id)
    pending = await commands.send(
        agent_id, wire.SESSION_DECIDE, decision.body(session_id), ttl=timedelta(seconds=60)
    )
    result = await pending.result(DECISION_RESULT_TIMEOUT_S)
    action = "session.approve" if decision.verdict == "approve" else "session.deny"
    if not result.ok:
        error = result.error or "error"
        await _db(service, _audit_decision, row, decision, f"{action}.refused", source_ip, error)
        why = _REFUSALS.get(error, f"the device refused it: {error}")
        msg = f"session {session_id}: {why}"
        raise DecisionRefused(msg)
    await _db(service, _audit_decision, row, decision, action, source_ip, None)
    if decision.verdict == "approve":
        await _db(service, repository.record_approval, session_id, decision.approver, decision.via)
    await _wait_moved(service, session_id)
    return await _db(service, repository.get_session, session_id)


async def _wait_moved(service: SessionService, session_id: str) -> None:
    """Wait (a bounded while) until the session this process follows leaves consent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MOVE_WAIT_S
    while (state := service.state(session_id)) in UNDECIDED:
        left = deadline - loop.time()
        if left <= 0:
            return
        await service.wait_changed(session_id, left)
    if state == "closed":
        await service.wait_closed(session_id, MOVE_WAIT_S)


def _audit_decision(
    db: Session,
    row: RemoteSession,
    decision: Decision,
    action: str,
    source_ip: str | None,
    error: str | None,
) -> None:
    details: dict[str, Any] = {
        "session_id": row.id,
        "via": decision.via,
        "operator": row.operator,
        **decision.audit,
    }
    if decision.verdict == "approve":
        details |= {"services": decision.services, "max_duration_s": decision.max_duration_s}
    else:
        details["reason"] = decision.reason
    if error is not None:
        details["refused"] = error
    audit.record(
        db,
        actor=decision.approver,
        action=action,
        target=row.device_id,
        details=details,
        source_ip=source_ip,
    )
    db.commit()


# -- one-time approval links ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkView:
    """What an approval link's page shows: its session, or why it serves no more."""

    problem: Literal["unknown", "used", "expired", "decided"] | None
    link: SessionApprovalLink | None = None
    session: RemoteSession | None = None
    device: Device | None = None


def create_link(
    db: Session,
    session_id: str,
    *,
    created_by: str,
    ttl_s: int | None,
    source_ip: str | None,
) -> tuple[str, datetime]:
    """A new approval link's token (shown once) and when it expires; audited.

    It expires after ``ttl_s`` seconds, never later than the session's own window
    (``expires_at``: the agent dials no more after it).

    Raises:
        NotFound: Unknown session.
        Conflict: The session is past consent.
    """
    row = repository.get_session(db, session_id)
    if row.state not in UNDECIDED:
        msg = f"session {session_id} is {row.state}: there is no consent to give"
        raise Conflict(msg)
    now = utcnow()
    expires_at = row.expires_at
    if ttl_s is not None:
        expires_at = min(expires_at, now + timedelta(seconds=ttl_s))
    token = new_token()
    link = SessionApprovalLink(
        session_id=row.id,
        token_hash=hash_token(token),
        created_by=created_by,
        created_at=now,
        expires_at=expires_at,
    )
    db.add(link)
    db.flush()
    audit.record(
        db,
        actor=created_by,
        action="session.approval_link",
        target=row.device_id,
        details={"session_id": row.id, "link_id": link.id, "expires_at": expires_at.isoformat()},
        source_ip=source_ip,
    )
    db.commit()
    return token, expires_at


def view_link(db: Session, token: str) -> LinkView:
    """The approval link of ``token`` and its session, or why it serves no more."""
    wanted = hash_token(token)
    link = db.exec(
        select(SessionApprovalLink).where(SessionApprovalLink.token_hash == wanted)
    ).first()
    if link is None or not tokens_equal(link.token_hash, wanted):
        return LinkView("unknown")
    row = db.get(RemoteSession, link.session_id)
    device = db.get(Device, row.device_id) if row is not None else None
    problem: Literal["used", "expired", "decided"] | None = None
    if link.used_at is not None:
        problem = "used"
    elif link.expires_at <= utcnow():
        problem = "expired"
    elif row is None or row.state not in UNDECIDED:
        problem = "decided"
    return LinkView(problem, link, row, device)


def claim_link(db: Session, link_id: int, verdict: str) -> bool:
    """Use the link once: whether this call claimed it (unused and unexpired until now)."""
    done = db.execute(
        sa.update(SessionApprovalLink)
        .where(
            col(SessionApprovalLink.id) == link_id,
            col(SessionApprovalLink.used_at).is_(None),
            col(SessionApprovalLink.expires_at) > utcnow(),
        )
        .values(used_at=utcnow(), verdict=verdict)
    )
    db.commit()
    return bool(done.rowcount)  # type: ignore[attr-defined]


def audit_link_refused(db: Session, view: LinkView, source_ip: str | None) -> None:
    """Audit a use of a link that serves no more (reused, expired, unknown)."""
    audit.record(
        db,
        actor="approval link",
        action="session.approval_link.refused",
        target=view.session.device_id if view.session is not None else None,
        details={
            "problem": view.problem,
            "link_id": view.link.id if view.link is not None else None,
            "session_id": view.link.session_id if view.link is not None else None,
        },
        source_ip=source_ip,
    )
    db.commit()


async def _db(service: SessionService, function: Callable[..., T], *args: Any) -> T:
    def work() -> T:
        with Session(service.engine, expire_on_commit=False) as db:
            return function(db, *args)

    return await asyncio.to_thread(work)
