"""The gateway's channels: each one the operator opens, joined to a twin on the agent's side.

Each channel the operator's client opens at the gateway (a shell, a command,
``sftp``, an ``-L`` forward) gets a twin channel on the agent's SSH
connection, and bytes go between the two as they come
(:mod:`server.sessions.bridges`: :class:`~server.sessions.bridges.ChannelEnd`,
:func:`~server.sessions.bridges.link`, and the callbacks every bridged channel
shares in :class:`~server.sessions.bridges.BridgedChannel`).

The operator's channel exists before its twin (the twin is opened once the
session is active): what the operator sends meanwhile is held, reading
paused, and handed over when the twin is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

import asyncssh

from server.sessions.bridges import BridgedChannel, ChannelEnd, link
from shared.errors import FieldlinkError
from shared.tunnel import SESSION_CLOSED_CODE

if TYPE_CHECKING:
    from server.gateway.connection import GatewayConnection
    from server.sessions.client import AgentConnection
    from server.sessions.recording import Recording

logger = logging.getLogger(__name__)

#: How long a channel the device closed without an exit status waits for the session's end.
SESSION_END_GRACE_S: Final = 0.25
#: How the client is told a session ended, by close reason.
_ENDED: Final[Mapping[str, str]] = {
    "idle_timeout": "was closed after being idle too long (idle_timeout)",
    "max_duration": "reached its maximum duration (max_duration)",
    "site_ended": "was ended by the site (site_ended)",
    "site_denied": "was not approved by the site (site_denied)",
    "operator": "was closed by an operator (operator)",
    "agent_unreachable": "lost the device (agent_unreachable)",
    "server_restart": "was closed because its server stopped (server_restart)",
    "access_revoked": "was ended because your access was revoked (access_revoked)",
    "operator_gone": "was ended because its operator's client stopped answering (operator_gone)",
    "error": "ended with an error (error)",
}


class GatewayRefusal(FieldlinkError):
    """The connection's session could not be opened, or has ended (the text is for the client)."""


def ended_text(reason: str) -> str:
    """What the client is told of a session that ended with ``reason``."""
    return _ENDED.get(reason, f"ended ({reason})")


def describe_loss(exc: BaseException | None) -> str:
    """What to tell the client when the agent's connection ended under a channel."""
    if isinstance(exc, asyncssh.DisconnectError) and exc.code == SESSION_CLOSED_CODE:
        reason = exc.reason.split(" (error", 1)[0]
        return f"the session {ended_text(reason)}"
    return "the connection to the device was lost"


class OperatorTCPSession(BridgedChannel, asyncssh.SSHTCPSession[bytes]):
    """The operator's ``-L`` channel at the gateway, joined to its device-side twin.

    Args:
        twin: The device-side end, already open.
        on_lost: Called when the channel closes.
    """

    def __init__(self, twin: ChannelEnd, on_lost: Callable[[], None] | None = None) -> None:
        self.end = ChannelEnd("operator")
        self._twin = twin
        self._on_lost = on_lost

    def session_started(self) -> None:
        link(self.end, self._twin)

    def channel_closed(self, exc: Exception | None) -> None:
        super().channel_closed(exc)
        if self._on_lost is not None:
            self._on_lost()


class DeviceTCPSession(BridgedChannel, asyncssh.SSHTCPSession[bytes]):
    """The device-side twin of an ``-L`` channel (a direct-tcpip channel to the agent)."""

    def __init__(self) -> None:
        self.end = ChannelEnd("device")


class DeviceProcessSession(BridgedChannel, asyncssh.SSHClientSession[bytes]):
    """The device-side twin of a shell, exec or subsystem channel.

    Args:
        on_end: Called once when the channel closes, with the exit status (or
            ``None``), the exit signal (or ``None``) and the connection's
            error (``None`` for a normal close); it decides what the
            operator's channel is told.
    """

    def __init__(
        self, on_end: Callable[[int | None, tuple[str, bool, str] | None, Any], None]
    ) -> None:
        self.end = ChannelEnd("device")
        self._on_end = on_end
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str] | None = None

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        del lang
        self.exit_signal = (signal, core_dumped, msg)

    def channel_closed(self, exc: Exception | None) -> None:
        self._on_end(self.exit_status, self.exit_signal, exc)


class OperatorSession(BridgedChannel, asyncssh.SSHServerSession[bytes]):
    """A session channel the client opened (shell, exec, sftp), joined to its device twin."""

    def __init__(self, connection: GatewayConnection) -> None:
        self._connection = connection
        self.end = ChannelEnd("operator")
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term_type: str | None = None
        self._term_size: tuple[int, int, int, int] = (80, 24, 0, 0)
        self._term_modes: Mapping[int, int] = {}
        self._command: str | None = None
        self._subsystem: str | None = None
        self._device_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._agent: AgentConnection | None = None
        self._recording: Recording | None = None

    @property
    def kind(self) -> str:
        """``shell``, ``exec``, ``scp`` or ``sftp``."""
        if self._subsystem is not None:
            return self._subsystem
        if self._command is None:
            return "shell"
        return "scp" if self._command.startswith("scp ") else "exec"

    def _newline(self) -> str:
        return "\r\n" if self._term_type else "\n"

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        super().connection_made(chan)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._term_type = term_type or "xterm"
        self._term_size = term_size
        self._term_modes = dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        self._connection.spawn(self._bridge_safely(), name=f"gateway-{self.kind}")

    async def _bridge_safely(self) -> None:
        try:
            await self._bridge()
        except Exception:
            logger.exception("SSH gateway: bridging a %s channel failed", self.kind)
            self.fail("internal error (see the server's log)")

    async def _bridge(self) -> None:
        chan = self._chan
        assert chan is not None  # noqa: S101  (started after connection_made)
        try:
            agent = await self._connection.agent_connection(chan.get_environment())
        except GatewayRefusal as exc:
            self.fail(str(exc))
            return
        if self.end.closed:
            return
        self._agent = agent
        cols, rows = self._term_size[0] or 80, self._term_size[1] or 24
        try:
            device_chan, opened = await agent.ssh.create_session(
                partial(DeviceProcessSession, self._device_ended),
                command=self._command,
                subsystem=self._subsystem,
                request_pty=True,
                term_type=self._term_type,
                term_size=(cols, rows, self._term_size[2], self._term_size[3]),
                term_modes=self._term_modes,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.ChannelOpenError) else str(exc)
            self.fail(f"the device refused the {self.kind}: {reason}", status=1)
            return
        device = cast(DeviceProcessSession, opened)
        if self.end.closed:
            device_chan.close()
            return
        self._device_chan = device_chan
        kind = self.kind
        self._connection.note_use(kind)
        if self._term_type is not None and kind in ("shell", "exec"):
            self._recording = self._connection.recording(cols=cols, rows=rows, term=self._term_type)
            if self._recording is not None:
                device.end.tap = self._recording.output
        if self._command is not None:
            self._connection.spawn(
                self._connection.audit_exec(self._command), name="gateway-audit-exec"
            )
        link(self.end, device.end)

    def _device_ended(
        self, status: int | None, signal: tuple[str, bool, str] | None, exc: Any
    ) -> None:
        if self._recording is not None:
            self._recording.flush()
        chan = self._chan
        if chan is None or self.end.closed:
            return
        agent = self._agent
        ended_by = agent.close_reason if agent is not None else None
        if signal is not None:
            name, core_dumped, message = signal
            chan.exit_with_signal(name, core_dumped, message)
            self.end.closed = True
        elif status is not None:
            chan.exit(status)
            self.end.closed = True
        elif exc is not None:
            self.notice(describe_loss(exc))
            self.end.close()
        elif ended_by is not None:
            self.notice(f"the session {ended_text(ended_by)}")
            self.end.close()
        else:
            # An agent ending the session closes its channels just before it disconnects.
            self._connection.spawn(self._end_quietly(), name="gateway-channel-end")

    async def _end_quietly(self) -> None:
        """The device closed the channel without an exit status: say why if the session ended."""
        agent = self._agent
        reason: str | None = None
        if agent is not None:
            with contextlib.suppress(TimeoutError):
                reason = await asyncio.wait_for(agent.wait_closed(), SESSION_END_GRACE_S)
        chan = self._chan
        if chan is None or self.end.closed:
            return
        if reason is not None:
            self.notice(f"the session {ended_text(reason)}")
            self.end.close()
        elif self._subsystem == "sftp":
            # asyncssh's SFTP server ends without an exit status; OpenSSH's says 0 (scp checks).
            chan.exit(0)
            self.end.closed = True
        else:
            self.end.close()

    def notice(self, text: str) -> None:
        """Show the operator a line from the gateway (on stderr)."""
        chan = self._chan
        if chan is None or self.end.closed:
            return
        newline = self._newline()
        lead = newline if self.end.linked else ""
        with contextlib.suppress(OSError):
            chan.write_stderr(f"{lead}fieldlink: {text}{newline}".encode())

    def end_with(self, text: str) -> None:
        """End the channel, telling the operator why."""
        if self._chan is None or self.end.closed:
            return
        self.notice(text)
        self.end.close()

    def fail(self, text: str, status: int = 255) -> None:
        """The channel cannot be served: say why and end it."""
        chan = self._chan
        if chan is None or self.end.closed:
            return
        self.notice(text)
        with contextlib.suppress(OSError):
            chan.exit(status)
        self.end.closed = True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        device_chan = self._device_chan
        if device_chan is not None and not self.end.closed:
            with contextlib.suppress(OSError):
                device_chan.change_terminal_size(width, height, pixwidth, pixheight)
        if self._recording is not None:
            self._recording.resize(width, height)

    def signal_received(self, signal: str) -> None:
        device_chan = self._device_chan
        if device_chan is not None:
            with contextlib.suppress(OSError, ValueError):
                device_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        device_chan = self._device_chan
        if device_chan is None:
            return False
        with contextlib.suppress(OSError):
            device_chan.send_break(msec)
        return True

    def channel_closed(self, exc: Exception | None) -> None:
        super().channel_closed(exc)
        if self._recording is not None:
            self._recording.flush()
        self._connection.forget(self)
