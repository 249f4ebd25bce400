"""Who watches a live session besides its owner: the terminal output fanned out.

A specialist the session's incident was escalated to (or an administrator) may
observe a live session (``/api/v1/sessions/{id}/observe``): they receive what
the device's shell prints, as the owner's terminal shows it, and nothing they
send reaches the device. Joins and leaves are announced to everyone in the
session (the owner's terminal socket and every observer) as text frames
``{"type": "observer", "event": "join"|"leave", "user": NAME}``.

The owner may let an observer take part (``POST
/api/v1/sessions/{id}/observers/{user}/allow-input``, revoked with ``DELETE``
on the same path): while allowed, what that observer types reaches the
shell, through the owner's terminal (:attr:`Audience.feed`). Grants, revokes
and the first keystroke after each grant are announced as
``{"type": "observer", "event": "input_allowed"|"input_revoked"|"typing",
"user": NAME, "by": OWNER}`` (``by`` only on grants and revokes). A grant
ends when the observer leaves.

Each listener has its own bounded queue: an observer that cannot keep up is
dropped (its socket closes), never slowing the owner's shell.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Final

#: Chunks of output (or announcements) an observer may lag behind before it is dropped.
QUEUE_MAX: Final = 512

Item = bytes | str | None


class Listener:
    """One socket in the session: an observer (output and announcements) or a participant."""

    def __init__(self, *, output: bool) -> None:
        self.output = output
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_MAX)
        #: Set when the listener fell behind and was dropped, or the session ended.
        self.ended = False

    def offer(self, item: Item) -> None:
        """Queue ``item``; a full queue ends the listener (it fell behind)."""
        if self.ended:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.ended = True
            self._wake()
            return
        if item is None:
            self.ended = True

    def _wake(self) -> None:
        # Make room for the end marker, so that the reader wakes up and stops.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Audience:
    """The listeners of one live session's terminal output and announcements."""

    def __init__(self) -> None:
        self._listeners: set[Listener] = set()
        self.observers: list[str] = []
        self.closed = False
        #: Observers the owner lets type, and whether each typed since the grant.
        self.typists: dict[str, bool] = {}
        #: Writes to the shell while the owner's terminal is open (set by its pump).
        self.feed: Callable[[bytes], Awaitable[None]] | None = None

    def join(self, *, output: bool) -> Listener:
        """A new listener (``output``: an observer, which also receives the shell's output)."""
        listener = Listener(output=output)
        if self.closed:
            listener.offer(None)
        else:
            self._listeners.add(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        """Forget ``listener``."""
        self._listeners.discard(listener)

    def publish(self, data: bytes) -> None:
        """Fan out a chunk of the shell's output to the observers."""
        for listener in list(self._listeners):
            if listener.output:
                listener.offer(data)

    def announce(self, event: str, user: str) -> None:
        """Tell everyone in the session that ``user`` joined or left as an observer."""
        if event == "join":
            self.observers.append(user)
        elif user in self.observers:
            self.observers.remove(user)
            if user not in self.observers:
                self.typists.pop(user, None)
        self.tell({"type": "observer", "event": event, "user": user})

    def tell(self, message: dict[str, object]) -> None:
        """Send a JSON text frame to everyone in the session."""
        text = json.dumps(message)
        for listener in list(self._listeners):
            listener.offer(text)

    def allow_input(self, user: str, *, by: str) -> bool:
        """Let observer ``user`` type (``False``: not observing now)."""
        if user not in self.observers or self.closed:
            return False
        if user not in self.typists:
            self.typists[user] = False
            self.tell({"type": "observer", "event": "input_allowed", "user": user, "by": by})
        return True

    def revoke_input(self, user: str, *, by: str) -> bool:
        """Stop ``user`` typing (``False``: it was not allowed to)."""
        if self.typists.pop(user, None) is None:
            return False
        self.tell({"type": "observer", "event": "input_revoked", "user": user, "by": by})
        return True

    async def type_in(self, user: str, data: bytes) -> bool | None:
        """Pass an observer's keystrokes to the shell.

        Returns ``None`` when refused (not allowed, or no owner's terminal to
        type into), ``True`` for the first keystroke since the grant (announced
        here; the caller audits it), ``False`` for the others.
        """
        feed = self.feed
        if feed is None or user not in self.typists:
            return None
        first = not self.typists[user]
        self.typists[user] = True
        if first:
            self.tell({"type": "observer", "event": "typing", "user": user})
        await feed(data)
        return first

    def close(self) -> None:
        """The session ended: every listener's reader stops."""
        self.closed = True
        for listener in list(self._listeners):
            listener.offer(None)
        self._listeners.clear()
