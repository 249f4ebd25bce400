"""How long a command's session lives: heartbeats while it runs, and signals that end it.

``fieldlink exec|connect|ssh`` close the session they opened on the way out,
however they are stopped: Ctrl-C, ``kill`` (SIGTERM) or a closed terminal
(SIGHUP) all end the command as Ctrl-C does, also when it runs in the
background of a script (``cmd &``), where the shell ignores SIGINT for it. A
signal the parent chose to ignore stays ignored (``nohup`` and SIGHUP).

A command killed outright (SIGKILL) or cut off from the network closes
nothing: :class:`Heartbeats` tells the server, every third of its
``operator_heartbeat_timeout_s``, that the command still runs; without a beat
the server closes the session itself (``operator_gone``,
:mod:`server.sessions.heartbeat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Final, TypeVar, cast

from server.client.api import ApiClient
from shared.errors import FieldlinkError

T = TypeVar("T")

#: The signals that end a command as Ctrl-C does.
ENDING_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How often to beat before the server said its timeout (its default is 90 s).
FIRST_INTERVAL_S: Final = 10.0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _heeded() -> list[signal.Signals]:
    """The ending signals this process does not ignore (SIGINT in ``cmd &``, SIGHUP under
    ``nohup`` are ignored on purpose and stay so)."""
    return [sig for sig in ENDING_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]


@contextlib.contextmanager
def ended_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`KeyboardInterrupt`, as Ctrl-C does, so that the
    ``finally`` blocks (closing the session) run; the handlers are restored on the way out."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in _heeded() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; an ending signal cancels ``main`` (its clean-up runs) and then
    raises :class:`KeyboardInterrupt` here, whichever of the signals it was."""
    caught: list[int] = []

    async def guarded() -> T | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # asyncio.run always runs a task
            raise RuntimeError
        heeded = _heeded()
        previous = {sig: signal.getsignal(sig) for sig in heeded}

        def stop(signum: int) -> None:
            caught.append(signum)
            task.cancel()

        for sig in heeded:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await main
        except asyncio.CancelledError:
            if caught:
                return None
            raise
        finally:
            for sig in heeded:
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous[sig])

    result = asyncio.run(guarded())
    if caught:
        raise KeyboardInterrupt
    return cast("T", result)  # None only when a signal came


class Heartbeats:
    """Beats for a session from a thread of its own until :meth:`stop` (or it closed).

    Args:
        api: The command's client (its server and token; the thread has its own connection).
        session_id: The session the command opened with ``keepalive``.
    """

    def __init__(self, api: ApiClient, session_id: str) -> None:
        self.server = api.server
        self.token = api.token
        self.session_id = session_id
        self.interval_s = FIRST_INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fieldlink-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat now (the server says how often it wants it), then every third of its timeout."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (the command ends; it closes the session, or leaves it as it found it)."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        with ApiClient(self.server, self.token, timeout=10.0) as api:
            wait = 0.0
            while not self._stop.wait(wait):
                wait = self.interval_s
                try:
                    answer = api.heartbeat(self.session_id)
                except FieldlinkError:
                    continue  # the server is away for now: the next beat may reach it
                self.interval_s = max(0.2, float(answer.get("timeout_s") or 30.0) / 3)
                wait = self.interval_s
                if not answer.get("open", True):
                    return
