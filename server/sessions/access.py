"""Ending live sessions and channels when the access they depend on is withdrawn.

A remote session belongs to its operator; a browser terminal or forward
socket also depends on the token (bearer or console cookie) it was opened
with, and on its user's role (an admin may use another operator's session).
When a user is disabled, demoted below what the channel needs or deleted,
when their scope is narrowed so that the session's device lies outside it
(:mod:`server.scope`), when they log out or a token is revoked, everything
that depends on it ends
within :attr:`ServerSettings.access_check_interval_s` (sooner when this
process made the change: :meth:`AccessWatch.check_now`), whichever process
or command (``fieldlink user disable``) made it: the watch reads the
database, not a message. The re-check is the ``access`` job of
:class:`server.upkeep.Upkeep`, every ``access_check_interval_s``.

A session whose operator lost access closes with reason ``access_revoked``
(audited as ``session.close``); a channel that lost its token or its user's
admin role on another's session is ended alone, audited as
``session.channel_revoked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from server import audit
from server.models import ApiToken, User, role_at_least
from server.sessions.states import ACCESS_REVOKED

if TYPE_CHECKING:
    from server.sessions.service import SessionService

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Channel:
    """One live channel: whose, on which session, opened with which token."""

    session_id: str
    username: str
    token_hash: str | None
    source_ip: str | None = None
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    why: str | None = None
    #: The role the channel keeps needing; ``None``: ``operator`` on one's own session,
    #: ``admin`` on another's. An observer (admitted as the incident's specialist) needs
    #: ``operator``.
    needed: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What the database says about a user (``None`` fields: no such user)."""

    role: str | None
    disabled: bool
    #: The live sessions' devices that lie outside the user's scope.
    out_of_scope: frozenset[str] = frozenset()


def user_denial(grant: Grant | None, needed: str, device_id: str | None = None) -> str | None:
    """Why a user may no longer use what needs the ``needed`` role on ``device_id``
    (``None``: they may)."""
    if grant is None or grant.role is None:
        return "the user was removed"
    if grant.disabled:
        return "the user was disabled"
    if not role_at_least(grant.role, needed):
        return f"the user no longer has the {needed} role"
    if device_id is not None and device_id in grant.out_of_scope:
        return "the device is no longer in the user's scope"
    return None


class AccessWatch:
    """The access every live session and channel depends on, re-checked by :meth:`check`.

    The upkeep runs :meth:`check` every ``interval_s`` (:func:`server.upkeep.access_job`).
    """

    def __init__(self, manager: SessionService, interval_s: float) -> None:
        self._manager = manager
        self.interval_s = interval_s
        self._channels: dict[int, Channel] = {}
        self._ids = itertools.count(1)
        #: Runs the upkeep's access job now (set by the app; callable from any thread).
        self.wake: Callable[[], None] | None = None

    def check_now(self) -> None:
        """Re-check at once (this process just disabled a user or revoked a token).

        Safe from any thread (synchronous routes run in a worker thread).
        """
        if self.wake is not None:
            self.wake()

    @contextlib.contextmanager
    def channel(
        self,
        session_id: str,
        *,
        username: str,
        token_hash: str | None,
        source_ip: str | None = None,
        needed: str | None = None,
    ) -> Iterator[Channel]:
        """Follow a channel while it is open; its ``revoked`` event fires when access ends."""
        key = next(self._ids)
        entry = Channel(session_id, username, token_hash, source_ip, needed=needed)
        self._channels[key] = entry
        try:
            yield entry
        finally:
            self._channels.pop(key, None)

    async def check(self) -> None:
        """Close what lost its access: sessions of users who lost theirs, then channels."""
        operators = self._manager.live_operators()
        channels = list(self._channels.values())
        if not operators and not channels:
            return
        device_of = self._manager.device_of
        uses: dict[str, set[str]] = {}  # user -> the devices of their live sessions and channels
        for session_id, name in [*operators, *((c.session_id, c.username) for c in channels)]:
            device_id = device_of(session_id)
            uses.setdefault(name, set()).update([device_id] if device_id else [])
        hashes = {c.token_hash for c in channels if c.token_hash is not None}
        grants, live_tokens = await asyncio.to_thread(self._read, uses, hashes)
        for session_id, operator in operators:
            why = user_denial(grants.get(operator), "operator", device_of(session_id))
            if why is not None:
                logger.warning("closing session %s of %s: %s", session_id, operator, why)
                await self._manager.close(
                    session_id,
                    reason=ACCESS_REVOKED,
                    actor="server",
                    detail=f"access of {operator} was revoked: {why}",
                )
        owners = self._manager.operators_by_session()
        for entry in channels:
            if entry.revoked.is_set():
                continue
            needed = entry.needed or (
                "operator" if owners.get(entry.session_id) == entry.username else "admin"
            )
            why = user_denial(grants.get(entry.username), needed, device_of(entry.session_id))
            if why is None and entry.token_hash is not None and entry.token_hash not in live_tokens:
                why = "the token it was opened with was revoked"
            if why is not None:
                entry.why = why
                entry.revoked.set()
                await asyncio.to_thread(self._audit_channel, entry)

    def _read(
        self, uses: dict[str, set[str]], hashes: set[str]
    ) -> tuple[dict[str, Grant], set[str]]:
        from server.scope import Scope

        with Session(self._manager.engine) as db:
            users = db.exec(select(User).where(col(User.username).in_(uses))).all()
            grants: dict[str, Grant] = {}
            for user in users:
                scope = Scope.of(user)
                outside = frozenset(
                    device_id
                    for device_id in uses[user.username]
                    if not scope.unrestricted and not scope.sees_device(db, device_id)
                )
                grants[user.username] = Grant(user.role, user.disabled, outside)
            live: set[str] = set()
            if hashes:
                # An expired token does not end a channel already open; a revoked one does.
                rows = db.exec(
                    select(ApiToken.token_hash).where(
                        col(ApiToken.token_hash).in_(hashes), col(ApiToken.revoked_at).is_(None)
                    )
                ).all()
                live = set(rows)
        return grants, live

    def _audit_channel(self, entry: Channel) -> None:
        with Session(self._manager.engine) as db:
            audit.record(
                db,
                actor="server",
                action="session.channel_revoked",
                target=self._manager.device_of(entry.session_id),
                details={"session_id": entry.session_id, "user": entry.username, "why": entry.why},
                source_ip=entry.source_ip,
            )
            db.commit()
