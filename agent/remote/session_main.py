"""The session process: one remote session's SSH stack, in a process that ends with it.

Started by the agent (:class:`agent.remote.session_process.SessionProcess`) as
``python -m agent.remote.session_main --log-level LEVEL``, as the agent's own
user, with the agent's environment. It loads the session stack, then reads its
``start`` message on stdin (end of file instead: a retired spare, it exits),
runs :class:`agent.remote.sshd.AgentSession` (which dials the tunnel, serves
SSH and, with ``[agent.policy] shell_helper``, asks the root helper for shells
over its socket, as the agent did), reports on stdout as :mod:`agent.remote.pipe`
says, and exits. asyncssh, websockets and cryptography are loaded here only,
so the agent's memory is what it was before the session once this process is gone.

Its stdout is the pipe alone: fd 1 is pointed at stderr before anything else
runs, so a stray print cannot corrupt the protocol. Logs go to stderr (the
agent's journal) in the agent's format.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from datetime import datetime
from typing import Any

from agent.remote import pipe
from agent.remote.outcome import Refusal, SessionOutcome
from shared.wire import CLOSE_REASONS

logger = logging.getLogger("agent.remote.session")


class _Pipe:
    """The session process's end of the pipe: blocking writes of short lines."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = pipe.encode(message)
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:  # the agent has gone; the session ends by stdin's EOF
            logger.debug("the agent's pipe is closed")


async def _run(out: _Pipe, wait_s: float | None) -> SessionOutcome | None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=pipe.MAX_LINE, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        try:
            first = await asyncio.wait_for(reader.readline(), wait_s)
        except TimeoutError:  # a spare whose agent never retired it: not an orphan forever
            first = b""
        if not first:  # a spare the agent retired before it got a session
            logger.debug("session process: retired before a session")
            return None
        start = pipe.StartSession.from_message(pipe.decode(first))
    except (pipe.PipeError, ValueError, asyncio.LimitOverrunError) as exc:
        logger.error("session process: no valid start message (%s)", exc)
        return None
    try:
        return await _serve(start, out, reader)
    except Exception as exc:
        logger.exception("session %s: the session process failed", start.session_id)
        return SessionOutcome(start.session_id, "error", f"the session process failed: {exc}")


async def _serve(
    start: pipe.StartSession, out: _Pipe, reader: asyncio.StreamReader
) -> SessionOutcome:
    from agent.remote.client_keys import UsedClientKeys
    from agent.remote.sshd import AgentSession

    class _ReportedKeys(UsedClientKeys):
        """This process's ledger, seeded by the agent's; each claim goes back to it."""

        def claim(self, fingerprint: str, expires_at: datetime) -> bool:
            first = super().claim(fingerprint, expires_at)
            if first:
                out.send(
                    {
                        "type": "claimed",
                        "fingerprint": fingerprint,
                        "expires_at": expires_at.isoformat(),
                    }
                )
            return first

    ledger = _ReportedKeys()
    for fingerprint, expires_at in start.used_keys.items():
        UsedClientKeys.claim(ledger, fingerprint, expires_at)
    context = None
    if start.ws_url.startswith("wss:"):
        context = ssl.create_default_context()
        if start.ca_file is not None:
            # The device CA too: a center may serve its own certificate.
            context.load_verify_locations(cafile=str(start.ca_file))

    def on_refusal(refusal: Refusal) -> None:
        out.send(pipe.refusal_message(refusal))

    session = AgentSession(
        start.ws_url,
        session_id=start.session_id,
        session_token=start.token,
        host_key_path=start.host_key_path,
        client_public_key=start.client_key,
        policy=start.policy,
        expires_at=start.expires_at,
        on_refusal=on_refusal,
        on_ready=lambda: out.send({"type": "ready"}),
        proxy=start.proxy,
        ssl_context=context,
        used_keys=ledger,
        connect_timeout_s=start.connect_timeout_s,
    )
    commands = asyncio.create_task(_follow_commands(session, reader))
    try:
        return await session.run()
    finally:
        commands.cancel()


async def _follow_commands(session: Any, reader: asyncio.StreamReader) -> None:
    """Apply ``end`` messages from stdin; its end of file ends the session (the agent left)."""
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            line = b""
        if not line:
            session.end("site_ended")
            return
        try:
            message = pipe.decode(line)
        except pipe.PipeError:
            logger.warning("session process: ignored a malformed line from the agent")
            continue
        reason = message.get("reason")
        if message["type"] == "end" and reason in CLOSE_REASONS:
            session.end(reason)


def main(argv: list[str] | None = None) -> int:
    """Run one session from the ``start`` message on stdin; 0 once its outcome is sent."""
    parser = argparse.ArgumentParser(prog="agent.remote.session_main")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--wait-s", type=float, default=None, help="for the start message")
    args = parser.parse_args(argv)
    # The pipe gets its own descriptor; fd 1 becomes stderr for everything else.
    out = _Pipe(os.dup(1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from shared.logs import configure_logging, quiet_library_warnings

    configure_logging(args.log_level)
    quiet_library_warnings()
    # The stack first, the session second: a spare (started before its session is known,
    # see agent.remote.session_process) is ready to dial the moment its start arrives.
    import websockets.asyncio.client  # noqa: F401

    import agent.remote.sshd  # noqa: F401

    outcome = asyncio.run(_run(out, args.wait_s))
    if outcome is None:
        return 2
    out.send(pipe.outcome_message(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
