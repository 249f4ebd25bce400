"""The agent's side of a session process: start it, feed it, read its reports, see it gone.

:class:`SessionProcess` is what :class:`agent.remote.sessions.SessionController`
runs for each approved session: it starts ``python -m agent.remote.session_main``
(the same interpreter, the agent's user and environment), sends the session's
parameters down the pipe (:mod:`agent.remote.pipe`), relays the process's
refusals and readiness to the controller, and returns its outcome. The
process is always gone when :meth:`SessionProcess.run` returns: after its
outcome it has :data:`EXIT_GRACE_S` to exit before it is killed, and a
cancelled run kills it. A process that dies without an outcome (killed,
crashed) ends the session with ``error`` and says how it died.

Standard library only: the idle agent imports this module, never asyncssh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from agent.remote import pipe
from agent.remote.outcome import Refusal, SessionOutcome
from shared.ids import utcnow
from shared.wire import CloseReason

logger = logging.getLogger(__name__)

#: How long a session process may take to exit once it has sent its outcome.
EXIT_GRACE_S: Final = 5.0
#: How long a session process has to report once asked to end (a dial may hang longer).
END_GRACE_S: Final = 5.0
#: The session process's module.
SESSION_MAIN: Final = "agent.remote.session_main"


class SessionProcess:
    """One session served by a process of its own (a ``RunnableSession`` of the controller).

    Args:
        start: The session's parameters (its token among them: sent down the pipe only).
        on_refusal: Called for each refusal the session reports.
        on_ready: Called once the server's SSH client has authenticated.
        ledger: The agent's record of used one-time keys.
        log_level: The session process's log level (the agent's).
        spare: Where a pre-started session process may be waiting (and where the
            next one is started once this session ends).
    """

    def __init__(
        self,
        start: pipe.StartSession,
        *,
        on_refusal: Callable[[Refusal], None],
        on_ready: Callable[[], None],
        ledger: pipe.KeyLedger = pipe.KEY_LEDGER,
        log_level: str | None = None,
        spare: SpareProcess | None = None,
    ) -> None:
        self.session_id = start.session_id
        self._start = start
        self._on_refusal = on_refusal
        self._on_ready = on_ready
        self._ledger = ledger
        self._spare = spare or SpareProcess(0)
        self._log_level = log_level or logging.getLevelName(logging.getLogger().level).lower()
        self._local_reason: CloseReason | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._refusals: list[Refusal] = []
        self._started_at: datetime | None = None
        self._stopper: asyncio.TimerHandle | None = None
        self._stopped = False
        self._log = logging.LoggerAdapter(logger, {"session_id": start.session_id})

    @property
    def pid(self) -> int | None:
        """The session process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def end(self, reason: CloseReason = "site_ended") -> None:
        """End the session (before or while it runs); :meth:`run` returns soon after."""
        self._local_reason = self._local_reason or reason
        self._send({"type": "end", "reason": reason})
        if self._process is not None and self._stopper is None:
            # One still dialing (or stuck) is stopped: the session ends when asked.
            self._stopper = asyncio.get_running_loop().call_later(END_GRACE_S, self._stop)

    def _stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            self._log.warning("session process %d did not end in time; killing it", process.pid)
            self._stopped = True
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def run(self) -> SessionOutcome:
        """Start the session process, relay its reports, and return its outcome once it is gone."""
        if self._local_reason is not None:
            return SessionOutcome(
                self.session_id, self._local_reason, "ended before the tunnel opened"
            )
        fingerprint = pipe.key_fingerprint(self._start.client_key)
        used = self._ledger.reserve(fingerprint, self._start.expires_at)
        start = self._start
        if used:
            start = dataclasses.replace(start, used_keys={**start.used_keys, **used})
        try:
            self._process = self._spare.take() or await _spawn(self._log_level)
        except OSError as exc:
            self._ledger.release(fingerprint)
            self._log.error("cannot start the session process: %s", exc)
            return SessionOutcome(
                self.session_id, "error", f"cannot start the session process: {exc}"
            )
        self._log.info("session process %d started", self._process.pid)
        try:
            self._send(start.to_message())
            if self._local_reason is not None:  # ended while the process was starting
                self.end(self._local_reason)
            outcome = await self._read(self._process)
            await self._reap(self._process)
        finally:
            if self._process.returncode is None:  # cancelled: it goes with the session
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._process.wait())
            if self._stopper is not None:
                self._stopper.cancel()
            self._ledger.release(fingerprint)
            self._spare.refill(self._log_level)
        if outcome is None and self._stopped and self._local_reason is not None:
            outcome = SessionOutcome(
                self.session_id,
                self._local_reason,
                "ended before the tunnel opened" if self._started_at is None else "ended",
                started_at=self._started_at,
                refusals=list(self._refusals),
            )
        if outcome is None:
            outcome = SessionOutcome(
                self.session_id,
                "error",
                f"the session process {_how_it_ended(self._process.returncode)}",
                started_at=self._started_at,
                refusals=list(self._refusals),
            )
            self._log.warning("session closed: %s", outcome.detail)
        return outcome

    async def _read(self, process: asyncio.subprocess.Process) -> SessionOutcome | None:
        assert process.stdout is not None  # noqa: S101 - created with a pipe
        while True:
            try:
                line = await process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self._log.error("session process: a line over the limit; ending it")
                process.kill()
                return None
            if not line:
                return None
            try:
                message = pipe.decode(line)
                kind = message["type"]
                if kind == "outcome":
                    return pipe.read_outcome(self.session_id, message)
                if kind == "refusal":
                    refusal = pipe.read_refusal(message)
                    self._refusals.append(refusal)
                    self._on_refusal(refusal)
                elif kind == "ready":
                    self._started_at = utcnow()
                    self._on_ready()
                elif kind == "claimed":
                    fingerprint, expires_at = message.get("fingerprint"), message.get("expires_at")
                    if isinstance(fingerprint, str) and isinstance(expires_at, str):
                        self._ledger.claim(fingerprint, pipe.read_time(expires_at))
                else:
                    raise pipe.PipeError(kind)
            except pipe.PipeError as exc:
                self._log.error("session process: protocol error (%s); ending it", exc)
                process.kill()
                return None

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), EXIT_GRACE_S)
        except TimeoutError:
            self._log.warning("session process %d did not exit; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return
        try:
            process.stdin.write(pipe.encode(message))
        except (OSError, RuntimeError):  # it has gone; its end is read on stdout
            self._log.debug("session process: pipe closed")


async def _spawn(log_level: str, wait_s: float | None = None) -> asyncio.subprocess.Process:
    wait = [] if wait_s is None else ["--wait-s", str(wait_s)]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", SESSION_MAIN, "--log-level", log_level, *wait,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=pipe.MAX_LINE,
    )  # fmt: skip


class SpareProcess:
    """At most one session process started ahead of its session, for :data:`SPARE_LINGER_S`.

    Starting a session process costs about 0.3 s of CPU (an interpreter loading
    asyncssh, websockets and cryptography), on the path from the operator's click
    to the shell. Operators often open several sessions in a row; so once a
    session ends, a fresh process is started and loads the stack while nobody
    waits, and the next session within the linger takes it. It has served no
    session (every session still gets a process of its own, killed with it), and
    it is retired (its stdin closed: it exits) when the linger runs out, so the
    agent is back to its idle footprint then. ``linger_s`` 0 keeps no spare.
    """

    def __init__(self, linger_s: float) -> None:
        self.linger_s = linger_s
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The spare's process id while one waits."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def take(self) -> asyncio.subprocess.Process | None:
        """The waiting spare, now the caller's (``None``: there is none)."""
        process, self._process = self._process, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if process is None or process.returncode is not None:
            return None
        logger.debug("session process %d taken from the spare", process.pid)
        return process

    def refill(self, log_level: str) -> None:
        """Start a spare in the background if none waits (a session has just ended)."""
        if self.linger_s <= 0 or self._process is not None or self._starting is not None:
            return
        self._starting = asyncio.get_running_loop().create_task(self._start(log_level))

    async def _start(self, log_level: str) -> None:
        try:
            # Past its linger (and a margin) a spare leaves by itself, should the agent
            # never retire it (its event loop gone without closing the pipe).
            process = await _spawn(log_level, self.linger_s + EXIT_GRACE_S)
        except OSError as exc:
            logger.warning("cannot start a spare session process: %s", exc)
            return
        finally:
            self._starting = None
        if self._process is not None:  # lost a race with another refill
            self._retire_process(process)
            return
        self._process = process
        self._timer = asyncio.get_running_loop().call_later(self.linger_s, self.retire)

    def retire(self) -> None:
        """Let the waiting spare go (it exits at the end of its stdin)."""
        process = self.take()
        if process is not None:
            self._retire_process(process)

    def _retire_process(self, process: asyncio.subprocess.Process) -> None:
        task = asyncio.get_running_loop().create_task(_retire(process))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Retire the spare and any being started, and wait until they are gone."""
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        self.retire()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


async def _retire(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), EXIT_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


#: How long a spare session process waits for a session after the last one ended.
SPARE_LINGER_S: Final = 60.0


def _how_it_ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed ({name}) before it reported"
    return f"ended (exit status {returncode}) before it reported"
