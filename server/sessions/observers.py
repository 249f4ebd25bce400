"""Who watches a live session besides its owner: the terminal output fanned out.

A specialist the session's incident was escalated to (or an administrator) may
observe a live session (``/api/v1/sessions/{id}/observe``): they receive what
the device's shell prints, as the owner's terminal shows it, and nothing they
send reaches the device. Joins and leaves are announced to everyone in the
session (the owner's terminal socket and every observer) as text frames
``{"type": "observer", "event": "join"|"leave", "user": NAME}``.

Each listener has its own bounded queue: an observer that cannot keep up is
dropped (its socket closes), never slowing the owner's shell.
"""

from __future__ import annotations

import asyncio
import json
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
        text = json.dumps({"type": "observer", "event": event, "user": user})
        for listener in list(self._listeners):
            listener.offer(text)

    def close(self) -> None:
        """The session ended: every listener's reader stops."""
        self.closed = True
        for listener in list(self._listeners):
            listener.offer(None)
        self._listeners.clear()
