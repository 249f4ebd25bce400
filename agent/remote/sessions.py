"""Remote sessions on the device: ``session.open`` and ``session.close``, site consent, reports.

The server publishes a signed ``session.open`` (its body is
:class:`shared.models.SessionOpen`, which the agent reads without pydantic:
:mod:`agent.remote.session_bodies`). Once the dispatcher has verified it,
:class:`SessionController` checks it against the site policy and answers at
once: the session's services must all be allowed (else ``not_allowed``, and a
``session.denied`` event), and the device holds at most ``max_sessions``
sessions (else ``busy``). The result body is ``{"session_id", "state"}`` with
``state`` ``awaiting_consent`` or ``connecting``; the rest happens in a task
of the session's own, so the command's result never waits for the site or
the tunnel.

Consent (``[agent.policy] consent``: ``none``, ``notify``, ``required`` or ``local``) is
asked for, awaited and announced by :mod:`agent.remote.session_decisions`.

A running session reports ``session.started`` once the server's SSH client
has authenticated, one ``session.refused`` per refusal, and at the end
``session.closed`` (a :class:`shared.models.SessionClosedReport`). Its limits
are the smaller of the site's and the command's ``max_duration_s`` and
``idle_timeout_s``.

``session.close`` (and a local ``fieldlink agent end``) ends a session in any
state: a running one is ended through :meth:`agent.remote.sshd.AgentSession.end`; one
awaiting consent is reported ``session.closed`` with the reason the server
gave (a local ``end`` denies it instead).

Events go to ``fieldlink/v1/{device_id}/events`` through the ``publish``
callable (the broker link's QoS 1 event queue). Nothing here imports
asyncssh, websockets or pydantic at import time: the idle agent loads this
module. Each session's SSH stack runs in a session process of its own
(:mod:`agent.remote.session_process`), started once the session may dial and
gone when it ends, so the agent returns to its idle footprint after a session.

The controller is one state machine (policy, consent, running, reporting); the event
bodies are in :mod:`agent.remote.session_reports`, the site's consent in
:mod:`agent.remote.session_decisions`, and how a session is run in
:mod:`agent.remote.session_runners`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from agent.remote.commands import (
    NOT_ALLOWED,
    CommandFailed,
    CommandRegistry,
    CommandRequest,
    Outgoing,
    device_event,
    parse_body,
)
from agent.remote.policy import ASKING_CONSENT, SitePolicy
from agent.remote.session_bodies import SessionOpen, parse_close, parse_decide, parse_open
from agent.remote.session_decisions import (
    NOT_AWAITING,
    SiteDecision,
    announce_decision,
    await_decision,
    notify_site,
    web_decision,
)
from agent.remote.session_reports import closed_report, refusal_body
from agent.remote.session_runners import (
    RunnableSession,
    SessionFactory,
    SessionHooks,
    SessionLauncher,
)
from shared.errors import Conflict, NotFound
from shared.ids import isoformat_z, utcnow
from shared.wire import (
    SESSION_CLOSE,
    SESSION_CLOSED,
    SESSION_DECIDE,
    SESSION_DENIED,
    SESSION_OPEN,
    SESSION_REFUSED,
    SESSION_STARTED,
    CloseReason,
)

if TYPE_CHECKING:
    from agent.remote.outcome import Refusal

logger = logging.getLogger(__name__)

#: Result errors of a refused ``session.open`` or ``session.close``.
BUSY: Final = "busy"
UNKNOWN_SESSION: Final = "unknown_session"
ALREADY_OPEN: Final = "already_open"
EXPIRED: Final = "expired"
#: How long ``session.close`` and a local ``end`` wait for the session to be over.
CLOSE_WAIT_S: Final = 3.0
#: How long a stopping agent waits for its sessions to close and report.
SHUTDOWN_WAIT_S: Final = 5.0

SessionState = Literal["awaiting_consent", "connecting", "active"]


@dataclass(slots=True)
class LocalSession:
    """A session the device holds: awaiting consent, connecting, or active.

    Attributes:
        session_id: The session.
        operator: Who asked (as the server named them).
        reason: Why (as the server said).
        policy: The policy it runs under (narrowed to its services, limited).
        state: ``awaiting_consent``, ``connecting`` or ``active``.
        since: When it entered ``state``.
    """

    session_id: str
    operator: str
    reason: str
    policy: SitePolicy
    state: SessionState
    since: datetime = field(default_factory=utcnow)
    decision: asyncio.Future[SiteDecision] | None = field(default=None, repr=False)
    runner: RunnableSession | None = field(default=None, repr=False)
    close_reason: CloseReason | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """The session as ``fieldlink agent sessions`` shows it."""
        return {
            "session_id": self.session_id,
            "operator": self.operator,
            "reason": self.reason,
            "state": self.state,
            "since": isoformat_z(self.since),
        }

    def _enter(self, state: SessionState) -> None:
        self.state = state
        self.since = utcnow()


class SessionController:
    """The device's remote sessions: policy checks, consent, running them, reporting.

    Args:
        device_id: The device (events are published under its topics).
        policy: The site policy (``[agent.services]`` and ``[agent.policy]``).
        host_key_path: The SSH host key the server pinned at enrollment.
        publish: Publishes one device event (QoS 1); must not block.
        proxy: How to reach the server: ``True`` for the environment's proxy,
            a proxy URL, or ``None`` for a direct connection.
        ca_file: Extra CA certificates trusted for ``wss://`` (the device CA),
            on top of the system's.
        session_factory: Makes the session that dials (tests); default a
            :class:`agent.remote.session_process.SessionProcess`, which runs
            :class:`agent.remote.sshd.AgentSession` in a process of its own
            (:class:`agent.remote.session_runners.SessionLauncher`).
        connect_timeout_s: Limit on the tunnel's handshakes.
        in_process: Serve sessions in this process rather than in session processes
            (``fieldlink simulate``: many simulated devices share one SSH stack).
        spare_linger_s: After a session, keep a spare session process this long for
            the next one (0: none). Whoever sets it calls :meth:`shutdown`.
    """

    def __init__(
        self,
        device_id: str,
        policy: SitePolicy,
        *,
        host_key_path: Path,
        publish: Callable[[Outgoing], None],
        proxy: str | Literal[True] | None = True,
        ca_file: Path | None = None,
        session_factory: SessionFactory | None = None,
        connect_timeout_s: float = 10.0,
        in_process: bool = False,
        spare_linger_s: float = 0.0,
        watched: Mapping[str, tuple[str, Mapping[str, int]]] | None = None,
    ) -> None:
        self.device_id = device_id
        self.policy = policy
        #: Devices this agent watches as a site gateway (``[[agent.devices]]``): id to
        #: address and web page ports.
        self.watched = dict(watched or {})
        self.host_key_path = host_key_path
        self._publish = publish
        self._launcher = SessionLauncher(
            host_key_path=host_key_path,
            proxy=proxy,
            ca_file=ca_file,
            connect_timeout_s=connect_timeout_s,
            spare_linger_s=spare_linger_s,
        )
        launch = self._launcher.in_process_session if in_process else self._launcher.session_process
        self._factory = session_factory or launch
        self._sessions: dict[str, LocalSession] = {}
        self._stopping = False
        self._log = logging.LoggerAdapter(logger, {"device_id": device_id})

    def register(self, registry: CommandRegistry) -> None:
        """Register the ``session.open`` and ``session.close`` handlers."""
        registry.register(SESSION_OPEN, self.handle_open)
        registry.register(SESSION_CLOSE, self.handle_close)
        registry.register(SESSION_DECIDE, self.handle_decide)

    def sessions(self) -> list[LocalSession]:
        """The sessions the device holds now, oldest first."""
        return list(self._sessions.values())

    def get(self, session_id: str) -> LocalSession:
        """One session the device holds.

        Raises:
            NotFound: The device holds no such session.
        """
        entry = self._sessions.get(session_id)
        if entry is None:
            msg = f"no session {session_id} on this device"
            raise NotFound(msg)
        return entry

    # the server's commands

    async def handle_open(self, request: CommandRequest) -> dict[str, Any]:
        """``session.open``: check the policy, answer at once, run the session in the background.

        Raises:
            CommandFailed: ``invalid`` body, ``not_allowed`` services, ``busy``,
                ``already_open``, or a session key that has ``expired``.
        """
        spec = parse_body(parse_open, request.body)
        if spec.session_id in self._sessions:
            raise CommandFailed(ALREADY_OPEN, {"session_id": spec.session_id})
        site = self._site_policy(spec)
        requested = None if spec.services is None else frozenset(spec.services)
        refused = sorted(name for name in requested or () if not site.is_allowed(name))
        if refused:
            self._log.warning(
                "session %s refused: services %s are not allowed on this device",
                spec.session_id,
                ", ".join(refused),
            )
            self._emit(
                SESSION_DENIED,
                {"session_id": spec.session_id, "why": NOT_ALLOWED, "services": refused},
            )
            raise CommandFailed(NOT_ALLOWED, {"services": refused})
        if self._stopping:
            raise CommandFailed(BUSY, {"detail": "the agent is stopping"})
        if len(self._sessions) >= site.max_sessions:
            self._log.warning(
                "session %s refused: %d sessions already", spec.session_id, len(self._sessions)
            )
            raise CommandFailed(BUSY, {"max_sessions": self.policy.max_sessions})
        if spec.expires_at <= utcnow():
            raise CommandFailed(EXPIRED, {"session_id": spec.session_id})
        policy = site.narrowed(requested).limited(spec.max_duration_s, spec.idle_timeout_s)
        entry = LocalSession(
            session_id=spec.session_id,
            operator=spec.operator,
            reason=spec.reason,
            policy=policy,
            state="awaiting_consent" if policy.consent in ASKING_CONSENT else "connecting",
        )
        if entry.state == "awaiting_consent":
            entry.decision = asyncio.get_running_loop().create_future()
        self._sessions[entry.session_id] = entry
        entry.task = asyncio.create_task(
            self._lifecycle(entry, spec), name=f"session {entry.session_id}"
        )
        return {"session_id": entry.session_id, "state": entry.state}

    def _site_policy(self, spec: SessionOpen) -> SitePolicy:
        """The policy ``spec`` runs under: this device's, or a watched device's.

        Raises:
            CommandFailed: ``not_allowed`` for a device this agent does not watch.
        """
        if spec.device is None or spec.device == self.device_id:
            return self.policy
        where = self.watched.get(spec.device)
        if where is None:
            self._log.warning(
                "session %s refused: %s is not a device this agent watches",
                spec.session_id,
                spec.device,
            )
            self._emit(
                SESSION_DENIED,
                {"session_id": spec.session_id, "why": NOT_ALLOWED, "device": spec.device},
            )
            raise CommandFailed(NOT_ALLOWED, {"device": spec.device})
        return self.policy.for_watched(*where)

    async def handle_close(self, request: CommandRequest) -> dict[str, Any]:
        """``session.close``: end a session in any state, with the server's reason.

        Raises:
            CommandFailed: ``invalid`` body, or ``unknown_session``.
        """
        spec = parse_body(parse_close, request.body)
        entry = self._sessions.get(spec.session_id)
        if entry is None:
            raise CommandFailed(UNKNOWN_SESSION, {"session_id": spec.session_id})
        self._log.info("session %s: closing (%s)", entry.session_id, spec.reason)
        if entry.decision is not None and not entry.decision.done():
            entry.decision.set_result(SiteDecision("closed", close_reason=spec.reason))
        else:
            self._end(entry, spec.reason)
        return {"session_id": entry.session_id, "state": await self._wait_closed(entry)}

    async def handle_decide(self, request: CommandRequest) -> dict[str, Any]:
        """``session.decide``: a site person's decision given on the web (verified, signed).

        Taken only under ``consent = "required"``; ``local`` takes the device's own only.

        Raises:
            CommandFailed: ``invalid`` body, ``unknown_session``, ``local_consent``,
                ``not_awaiting``, or ``not_allowed`` services.
        """
        spec = parse_body(parse_decide, request.body)
        entry = self._sessions.get(spec.session_id)
        if entry is None:
            raise CommandFailed(UNKNOWN_SESSION, {"session_id": spec.session_id})
        decision = web_decision(spec, entry.policy, self._log)
        if entry.decision is None or entry.decision.done():
            raise CommandFailed(NOT_AWAITING, {"state": entry.state})
        entry.decision.set_result(decision)
        return {"session_id": entry.session_id, "verdict": spec.verdict}

    # the site's decisions (agent.remote.control)

    def approve(self, session_id: str) -> LocalSession:
        """Approve a session awaiting consent: the agent dials now.

        Raises:
            NotFound: No such session.
            Conflict: It is not awaiting consent.
        """
        return self._decide(session_id, SiteDecision("approved"))

    def deny(self, session_id: str) -> LocalSession:
        """Deny a session awaiting consent: it never dials.

        Raises:
            NotFound: No such session.
            Conflict: It is not awaiting consent.
        """
        return self._decide(session_id, SiteDecision("denied", why="denied"))

    async def end(self, session_id: str) -> str:
        """End a session on the device: one awaiting consent is denied, a running one ends.

        Returns:
            ``denied`` (it was awaiting consent), ``closed`` (it has ended) or
            ``closing`` (it is still winding down after :data:`CLOSE_WAIT_S`).

        Raises:
            NotFound: No such session.
        """
        entry = self.get(session_id)
        if entry.decision is not None and not entry.decision.done():
            entry.decision.set_result(SiteDecision("denied", why="denied"))
            await self._wait_closed(entry)
            return "denied"
        self._end(entry, "site_ended")
        return await self._wait_closed(entry)

    async def shutdown(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """End every session (the agent is stopping) and wait for their reports.

        No session opens after this.
        """
        self._stopping = True
        self._launcher.stop_sparing()  # no spare after the last session
        entries = list(self._sessions.values())
        for entry in entries:
            if entry.decision is not None and not entry.decision.done():
                entry.decision.set_result(SiteDecision("closed", close_reason="site_ended"))
            else:
                self._end(entry, "site_ended")
        tasks = [entry.task for entry in entries if entry.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._launcher.close()

    # one session's life

    async def _lifecycle(self, entry: LocalSession, spec: SessionOpen) -> None:
        try:
            if entry.decision is not None:
                decision = await await_decision(entry, spec.expires_at, self._emit, self._log)
                if not announce_decision(entry, decision, self._emit, self._log):
                    return
            elif entry.policy.consent == "notify":
                notify_site(entry, self._emit, self._log)
            await self._serve(entry, spec)
        except Exception as exc:
            self._log.exception("session %s failed", entry.session_id)
            self._emit(
                SESSION_CLOSED,
                closed_report(entry.session_id, "error", f"the agent failed: {exc}"),
            )
        finally:
            self._sessions.pop(entry.session_id, None)

    async def _serve(self, entry: LocalSession, spec: SessionOpen) -> None:
        if entry.close_reason is not None:
            self._emit(
                SESSION_CLOSED,
                closed_report(entry.session_id, entry.close_reason, "closed before dialing"),
            )
            return
        entry._enter("connecting")
        hooks = SessionHooks(
            on_refusal=partial(self._refused, entry), on_ready=partial(self._ready, entry)
        )
        runner = self._factory(spec, entry.policy, hooks)
        entry.runner = runner
        outcome = await runner.run()
        self._emit(
            SESSION_CLOSED,
            closed_report(
                entry.session_id,
                outcome.close_reason,
                outcome.detail,
                bytes_from_server=outcome.bytes_from_server,
                bytes_to_server=outcome.bytes_to_server,
                started_at=outcome.started_at,
                ended_at=outcome.ended_at,
                refusals=[
                    {"kind": r.kind, "target": r.target, "reason": r.reason}
                    for r in outcome.refusals
                ],
            ),
        )

    def _ready(self, entry: LocalSession) -> None:
        entry._enter("active")
        policy = entry.policy
        services = sorted(name for name in policy.services if policy.is_allowed(name))
        self._log.info("session %s started", entry.session_id)
        self._emit(
            SESSION_STARTED,
            {
                "session_id": entry.session_id,
                "services": services,
                "max_duration_s": policy.max_duration_s,
                "idle_timeout_s": policy.idle_timeout_s,
            },
        )

    def _refused(self, entry: LocalSession, refusal: Refusal) -> None:
        self._emit(SESSION_REFUSED, {"session_id": entry.session_id, **refusal_body(refusal)})

    def _end(self, entry: LocalSession, reason: CloseReason) -> None:
        entry.close_reason = entry.close_reason or reason
        if entry.runner is not None:
            entry.runner.end(reason)

    async def _wait_closed(self, entry: LocalSession) -> str:
        if entry.task is None:
            return "closed"
        done, _ = await asyncio.wait({entry.task}, timeout=CLOSE_WAIT_S)
        return "closed" if done else "closing"

    def _decide(self, session_id: str, decision: SiteDecision) -> LocalSession:
        entry = self.get(session_id)
        if entry.decision is None or entry.decision.done():
            msg = f"session {session_id} is not awaiting consent (it is {entry.state})"
            raise Conflict(msg)
        entry.decision.set_result(decision)
        return entry

    def _emit(self, event_type: str, body: Mapping[str, Any]) -> None:
        try:
            self._publish(device_event(self.device_id, event_type, body))
        except Exception:  # a reporting failure must not break the session
            self._log.exception("could not queue the %s event", event_type)

    def session_processes(self) -> list[int]:
        """The ids of the session processes serving sessions now."""
        pids = (getattr(entry.runner, "pid", None) for entry in self._sessions.values())
        return [pid for pid in pids if isinstance(pid, int)]

    def spare_process(self) -> int | None:
        """The id of the session process started ahead of the next session, if one waits."""
        return self._launcher.spare_process()
