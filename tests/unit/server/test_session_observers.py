"""The fan-out of a session's terminal output to its observers."""

from __future__ import annotations

import asyncio
import json

from server.sessions.observers import QUEUE_MAX, Audience


def drain(queue: asyncio.Queue[bytes | str | None]) -> list[bytes | str | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_output_goes_to_observers_and_announcements_to_everyone() -> None:
    audience = Audience()
    owner = audience.join(output=False)
    observer = audience.join(output=True)
    audience.announce("join", "sara")
    audience.publish(b"hello")
    assert audience.observers == ["sara"]
    joined = json.dumps({"type": "observer", "event": "join", "user": "sara"})
    assert drain(owner.queue) == [joined]
    assert drain(observer.queue) == [joined, b"hello"]
    audience.leave(observer)
    audience.announce("leave", "sara")
    assert audience.observers == []
    assert json.loads(str(drain(owner.queue)[0]))["event"] == "leave"
    audience.close()
    assert drain(owner.queue) == [None]
    late = audience.join(output=True)
    assert late.ended
    assert drain(late.queue) == [None]


def test_an_observer_that_falls_behind_is_dropped_without_blocking() -> None:
    audience = Audience()
    slow = audience.join(output=True)
    for _ in range(QUEUE_MAX + 10):
        audience.publish(b"x" * 10)
    assert slow.ended
    assert drain(slow.queue) == [None]
