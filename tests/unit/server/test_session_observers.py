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


def test_only_an_allowed_observer_types_and_the_first_keystroke_is_announced() -> None:
    async def scenario() -> tuple[list[bytes], list[object]]:
        audience = Audience()
        typed: list[bytes] = []

        async def feed(data: bytes) -> None:
            typed.append(data)

        owner = audience.join(output=False)
        results: list[object] = []
        results.append(audience.allow_input("sara", by="olga"))  # not observing: refused
        audience.join(output=True)
        audience.announce("join", "sara")
        results.append(await audience.type_in("sara", b"ls\n"))  # not allowed yet
        results.append(audience.allow_input("sara", by="olga"))
        results.append(await audience.type_in("sara", b"ls\n"))  # no owner's terminal
        audience.feed = feed
        results.append(await audience.type_in("sara", b"ls\n"))
        results.append(await audience.type_in("sara", b"pwd\n"))
        results.append(await audience.type_in("piet", b"rm\n"))
        results.append(audience.revoke_input("sara", by="olga"))
        results.append(await audience.type_in("sara", b"id\n"))
        audience.allow_input("sara", by="olga")
        audience.announce("leave", "sara")  # leaving ends the grant
        results.append(await audience.type_in("sara", b"id\n"))
        told = []
        while not owner.queue.empty():
            item = owner.queue.get_nowait()
            assert isinstance(item, str)
            told.append(json.loads(item)["event"])
        results.append(told)
        return typed, results

    typed, results = asyncio.run(scenario())
    assert typed == [b"ls\n", b"pwd\n"]
    assert results == [
        False, None, True, None, True, False, None, True, None, None,
        ["join", "input_allowed", "typing", "input_revoked", "input_allowed", "leave"],
    ]  # fmt: skip
