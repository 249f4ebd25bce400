"""The site's decision on a session awaiting consent: local (the device's panel) or web.

:class:`SiteDecision` is what the consent wait of
:class:`agent.remote.sessions.SessionController` resolves with: approved (perhaps
narrowed), denied, or closed by the server. :func:`web_decision` turns a verified
``session.decide`` into one, or refuses it: a device whose policy says
``consent = "local"`` takes no web decision (``local_consent``), and an approval
may narrow the session's services but never widen them (``not_allowed``).
Standard library only: the idle agent loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.remote.commands import NOT_ALLOWED, CommandFailed
from agent.remote.policy import SitePolicy
from agent.remote.session_bodies import SessionDecide
from agent.remote.session_reports import one_line
from shared.wire import CloseReason

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


def web_decision(
    spec: SessionDecide, policy: SitePolicy, log: logging.Logger | logging.LoggerAdapter[Any]
) -> SiteDecision:
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
