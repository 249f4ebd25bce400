"""Consent: the site's decision on a session, asked for, awaited and announced.

Consent (``[agent.policy] consent``):

- ``none``: the agent dials at once.
- ``notify``: it dials at once, logs a WARNING notice for the site (operator
  and reason) and emits ``session.approved`` (``by`` ``policy``): :func:`notify_site`.
- ``required``: it emits ``session.awaiting_consent`` and waits for a local
  ``fieldlink agent approve|deny SESSION`` (:mod:`agent.remote.control`), or a
  signed ``session.decide`` from the server (a site person's decision on the web,
  which may narrow the services and the maximum duration), up to
  ``approval_timeout_s``, never past the session key's ``expires_at``
  (:func:`await_decision`). Approved: ``session.approved`` (``by`` ``site``, ``via``
  ``local``, ``web`` or ``link``, and the web's ``approver``), then it dials. Denied or
  timed out: ``session.denied`` (``why`` ``denied`` or ``timeout``), and no tunnel is
  ever dialed (:func:`announce_decision`).
- ``local``: as ``required``, but only the local decision counts: a
  ``session.decide`` is refused (result error ``local_consent``) and logged.

:class:`SiteDecision` is what the consent wait of
:class:`agent.remote.sessions.SessionController` resolves with: approved (perhaps
narrowed), denied, or closed by the server. :func:`web_decision` turns a verified
``session.decide`` into one, or refuses it: a device whose policy says
``consent = "local"`` takes no web decision (``local_consent``), and an approval
may narrow the session's services but never widen them (``not_allowed``).
The log lines go to the controller's logger (``log``), the events through its ``emit``.
Standard library only: the idle agent loads it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from agent.remote.commands import NOT_ALLOWED, CommandFailed
from agent.remote.policy import SitePolicy
from agent.remote.session_bodies import SessionDecide
from agent.remote.session_reports import closed_report, one_line
from shared.ids import utcnow
from shared.wire import (
    SESSION_APPROVED,
    SESSION_AWAITING_CONSENT,
    SESSION_CLOSED,
    SESSION_DENIED,
    CloseReason,
)

if TYPE_CHECKING:
    from agent.remote.sessions import LocalSession

#: Publishes one device event (its type and body); never raises.
Emit = Callable[[str, Mapping[str, Any]], None]
Log = logging.Logger | logging.LoggerAdapter[Any]

#: Result errors of a refused ``session.decide``: the policy takes only a local decision;
#: the session is not awaiting consent (any more).
LOCAL_CONSENT: Final = "local_consent"
NOT_AWAITING: Final = "not_awaiting"


@dataclass(frozen=True, slots=True)
class SiteDecision:
    """How the wait for the site's consent ended.

    Attributes:
        verdict: ``approved``, ``denied`` or ``closed`` (by the server, or the agent stopping).
        why: A denial's ``why`` (``denied``, ``timeout``).
        close_reason: The close reason of ``closed``.
        via: Where the site decided: ``local``, ``web`` or ``link``.
        approver: Who decided (web and link only: the device's panel names nobody).
        reason: A web denial's reason.
        services: An approval's narrower services (``None``: as asked).
        max_duration_s: An approval's shorter maximum duration (``None``: as asked).
    """

    verdict: Literal["approved", "denied", "closed"]
    why: str = ""
    close_reason: CloseReason = "site_denied"
    via: str = "local"
    approver: str = ""
    reason: str = ""
    services: frozenset[str] | None = None
    max_duration_s: float | None = None

    def event_body(self) -> dict[str, Any]:
        """What ``session.approved`` / ``session.denied`` say of the site's decision."""
        body: dict[str, Any] = {"via": self.via}
        if self.approver:
            body["approver"] = self.approver
        if self.reason:
            body["reason"] = self.reason
        return body


def web_decision(spec: SessionDecide, policy: SitePolicy, log: Log) -> SiteDecision:
    """The decision a verified ``session.decide`` gives for a session under ``policy``.

    Raises:
        CommandFailed: ``local_consent`` (logged at WARNING for the site), or
            ``not_allowed`` services.
    """
    if policy.consent == "local":
        log.warning(
            "session %s: the %s decision (%s) by %s is ignored: this device takes "
            'only a local approval (consent = "local")',
            spec.session_id,
            spec.via,
            spec.verdict,
            one_line(spec.approver),
        )
        raise CommandFailed(LOCAL_CONSENT, {"consent": "local"})
    services = None if spec.services is None else frozenset(spec.services)
    refused = sorted(name for name in services or () if not policy.is_allowed(name))
    if refused:
        raise CommandFailed(NOT_ALLOWED, {"services": refused})
    if spec.verdict == "approve":
        return SiteDecision(
            "approved",
            via=spec.via,
            approver=spec.approver,
            services=services,
            max_duration_s=spec.max_duration_s,
        )
    return SiteDecision(
        "denied", why="denied", via=spec.via, approver=spec.approver, reason=spec.reason
    )


async def await_decision(
    entry: LocalSession, expires_at: datetime, emit: Emit, log: Log
) -> SiteDecision:
    """Ask the site (``session.awaiting_consent`` and a WARNING notice) and wait for its
    decision on ``entry``, up to the policy's ``approval_timeout_s`` and never past
    ``expires_at``; a denial (``timeout``) when none came."""
    assert entry.decision is not None  # noqa: S101 - only sessions awaiting consent
    left_s = (expires_at - utcnow()).total_seconds()
    timeout_s = max(0.0, min(entry.policy.approval_timeout_s, left_s))
    emit(
        SESSION_AWAITING_CONSENT,
        {
            "session_id": entry.session_id,
            "timeout_s": round(timeout_s, 3),
            "operator": entry.operator,
            "reason": entry.reason,
        },
    )
    log.warning(
        "NOTICE: remote session %s requested by %s: %s. Approve within %.0f s with "
        "`fieldlink agent approve %s`, or deny with `fieldlink agent deny %s`",
        entry.session_id,
        one_line(entry.operator) or "(operator not named)",
        one_line(entry.reason) or "(no reason given)",
        timeout_s,
        entry.session_id,
        entry.session_id,
    )
    try:
        return await asyncio.wait_for(asyncio.shield(entry.decision), timeout_s)
    except TimeoutError:
        if not entry.decision.done():
            entry.decision.set_result(SiteDecision("denied", why="timeout"))
        return entry.decision.result()


def announce_decision(entry: LocalSession, decision: SiteDecision, emit: Emit, log: Log) -> bool:
    """Report the site's decision on ``entry`` (``session.denied``, ``session.closed`` or
    ``session.approved``); an approval narrows ``entry.policy``. Whether to dial."""
    if decision.verdict == "denied":
        log.warning("session %s denied (%s)", entry.session_id, decision.why)
        body = {"session_id": entry.session_id, "why": decision.why}
        if decision.why == "denied":
            body |= decision.event_body()
        emit(SESSION_DENIED, body)
        return False
    if decision.verdict == "closed":
        emit(
            SESSION_CLOSED,
            closed_report(
                entry.session_id,
                decision.close_reason,
                "closed while awaiting the site's consent",
            ),
        )
        return False
    entry.policy = entry.policy.narrowed(decision.services).limited(decision.max_duration_s)
    log.warning(
        "session %s approved (%s%s)",
        entry.session_id,
        decision.via,
        f" by {one_line(decision.approver)}" if decision.approver else "",
    )
    emit(
        SESSION_APPROVED,
        {
            "session_id": entry.session_id,
            "by": "site",
            "consent": entry.policy.consent,
            **decision.event_body(),
        },
    )
    return True


def notify_site(entry: LocalSession, emit: Emit, log: Log) -> None:
    """``consent = "notify"``: a WARNING notice for the site and ``session.approved``
    (``by`` ``policy``); the agent dials at once."""
    log.warning(
        "NOTICE: remote session %s opened by %s: %s",
        entry.session_id,
        one_line(entry.operator) or "(operator not named)",
        one_line(entry.reason) or "(no reason given)",
    )
    emit(SESSION_APPROVED, {"session_id": entry.session_id, "by": "policy", "consent": "notify"})
