"""Channels of the operator's SSH connection joined to channels of the agent's.

Each channel the operator's client opens at the gateway (a shell, a command,
``sftp``, an ``-L`` forward) gets a twin channel on the agent's SSH
connection, and bytes go between the two as they come: no copy into Python
buffers beyond what asyncssh hands over, no per-byte work. Flow control is
asyncssh's own: when one side's send buffer passes its high-water mark, the
other side stops reading (its SSH window then closes on the sender), and
reading resumes when the buffer drains.

The operator's channel exists before its twin (the twin is opened once the
session is active): what the operator sends meanwhile is held, reading
paused, and handed over when the twin is there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel

logger = logging.getLogger(__name__)

DataType = int | None


class ChannelEnd:
    """One side of a bridge: a channel, and the end it passes data to.

    Args:
        label: For logs (``operator`` or ``device``).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.chan: SSHChannel[bytes] | None = None
        self.peer: ChannelEnd | None = None
        #: Called with every chunk this end receives (the recording taps the device's output).
        self.tap: Callable[[bytes], None] | None = None
        self.eof_received = False
        self.closed = False
        self._held: list[tuple[bytes, DataType]] = []
        self._writable: set[int] = set()

    def attach(self, chan: SSHChannel[bytes]) -> None:
        """The channel is open (``connection_made``)."""
        self.chan = chan
        self._writable = set(chan.get_write_datatypes())

    @property
    def linked(self) -> bool:
        """Whether data flows to a peer yet."""
        return self.peer is not None

    def receive(self, data: bytes, datatype: DataType) -> None:
        """Data arrived on this end's channel: pass it on, or hold it until linked."""
        tap = self.tap
        if tap is not None:
            tap(data)
        peer = self.peer
        if peer is None:
            self._held.append((data, datatype))
            if self.chan is not None:
                self.chan.pause_reading()
            return
        peer.write(data, datatype)

    def receive_eof(self) -> bool:
        """EOF arrived: pass it on; keep the channel open for the other direction."""
        self.eof_received = True
        if self.peer is not None:
            self.peer.write_eof()
        return True

    def write(self, data: bytes, datatype: DataType = None) -> None:
        """Send data on this end's channel (stderr becomes stdout where a channel has none)."""
        chan = self.chan
        if chan is None or self.closed:
            return
        if datatype is not None and datatype not in self._writable:
            datatype = None
        try:
            chan.write(data, datatype)
        except OSError:  # the channel is closing: what is left has nowhere to go
            return

    def write_eof(self) -> None:
        """Send EOF on this end's channel."""
        chan = self.chan
        if chan is not None and not self.closed:
            try:
                chan.write_eof()
            except OSError:
                return

    def pause_peer(self) -> None:
        """This end's send buffer is full (``pause_writing``): stop reading the peer."""
        if self.peer is not None and self.peer.chan is not None and not self.peer.closed:
            self.peer.chan.pause_reading()

    def resume_peer(self) -> None:
        """This end's send buffer drained (``resume_writing``): read the peer again."""
        if self.peer is not None and self.peer.chan is not None and not self.peer.closed:
            self.peer.chan.resume_reading()

    def close(self) -> None:
        """Close this end's channel (unsent data is flushed first)."""
        chan = self.chan
        if chan is not None and not self.closed:
            self.closed = True
            chan.close()

    def lost(self) -> None:
        """This end's channel closed (``connection_lost``)."""
        self.closed = True
        self._held.clear()

    def release(self) -> None:
        """Hand what was held to the peer and read on."""
        peer = self.peer
        if peer is None:
            return
        held, self._held = self._held, []
        for data, datatype in held:
            peer.write(data, datatype)
        if self.eof_received:
            peer.write_eof()
        if self.chan is not None and not self.closed:
            self.chan.resume_reading()


def link(first: ChannelEnd, second: ChannelEnd) -> None:
    """Join two ends: from now on each passes what it receives to the other.

    Both channels must be open (attached). An end whose channel closed
    meanwhile closes the other once what it held is handed over.
    """
    first.peer = second
    second.peer = first
    first.release()
    second.release()
    if first.closed:
        second.close()
    if second.closed:
        first.close()


class OperatorTCPSession(asyncssh.SSHTCPSession[bytes]):
    """The operator's ``-L`` channel at the gateway, joined to its device-side twin.

    Args:
        twin: The device-side end, already open.
        on_lost: Called when the channel closes.
    """

    def __init__(self, twin: ChannelEnd, on_lost: Callable[[], None] | None = None) -> None:
        self.end = ChannelEnd("operator")
        self._twin = twin
        self._on_lost = on_lost

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.end.attach(chan)

    def session_started(self) -> None:
        link(self.end, self._twin)

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self.end.receive(data, datatype)

    def eof_received(self) -> bool:
        return self.end.receive_eof()

    def pause_writing(self) -> None:
        self.end.pause_peer()

    def resume_writing(self) -> None:
        self.end.resume_peer()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self.end.lost()
        if self.end.peer is not None:
            self.end.peer.close()
        if self._on_lost is not None:
            self._on_lost()


class DeviceTCPSession(asyncssh.SSHTCPSession[bytes]):
    """The device-side twin of an ``-L`` channel (a direct-tcpip channel to the agent)."""

    def __init__(self) -> None:
        self.end = ChannelEnd("device")

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.end.attach(chan)

    def session_started(self) -> None:
        # Hold the service's first bytes (a VNC banner...) until the operator's channel is there.
        if not self.end.linked and self.end.chan is not None:
            self.end.chan.pause_reading()

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self.end.receive(data, datatype)

    def eof_received(self) -> bool:
        return self.end.receive_eof()

    def pause_writing(self) -> None:
        self.end.pause_peer()

    def resume_writing(self) -> None:
        self.end.resume_peer()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self.end.lost()
        if self.end.peer is not None:
            self.end.peer.close()


class DeviceProcessSession(asyncssh.SSHClientSession[bytes]):
    """The device-side twin of a shell, exec or subsystem channel.

    Args:
        on_end: Called once when the channel closes, with the exit status (or
            ``None``), the exit signal (or ``None``) and the connection's
            error (``None`` for a normal close).
    """

    def __init__(
        self, on_end: Callable[[int | None, tuple[str, bool, str] | None, Any], None]
    ) -> None:
        self.end = ChannelEnd("device")
        self._on_end = on_end
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.end.attach(chan)

    def session_started(self) -> None:
        if not self.end.linked and self.end.chan is not None:
            self.end.chan.pause_reading()

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self.end.receive(data, datatype)

    def eof_received(self) -> bool:
        return self.end.receive_eof()

    def pause_writing(self) -> None:
        self.end.pause_peer()

    def resume_writing(self) -> None:
        self.end.resume_peer()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        del lang
        self.exit_signal = (signal, core_dumped, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.end.lost()
        self._on_end(self.exit_status, self.exit_signal, exc)
