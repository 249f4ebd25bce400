"""The byte pumps of a remote session: a client's end joined to a channel on the device.

Two kinds of client end:

- **A WebSocket** (the API's terminal and forward sockets,
  :mod:`server.api.routes.session_sockets`): :func:`pump_terminal` joins it to a PTY
  shell (recorded, resizable), :func:`pump_forward` to a byte stream to one
  of the device's services (with the client's half-close).
- **An SSH channel** of the operator's own client (the SSH gateway,
  :mod:`server.gateway`): :class:`ChannelEnd` and :func:`link` join it to a
  twin channel on the agent's SSH connection; :class:`BridgedChannel` is the
  channel callbacks every bridged channel shares.

Back-pressure is end to end: a pump reads the next chunk only once the last
one was handed over (``send_bytes`` and ``drain`` wait while the other side's
buffer is full, and asyncssh then closes the SSH window on the sender);
between two SSH channels, a full send buffer pauses reading on the other
channel (``pause_writing``) until it drains. Bytes are passed as they come,
with no copy into Python buffers beyond what asyncssh and the WebSocket
hand over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

if TYPE_CHECKING:
    import asyncssh
    from asyncssh.channel import SSHChannel

    from server.sessions.observers import Audience, Listener
    from server.sessions.recording import Recording

logger = logging.getLogger(__name__)

#: Largest chunk read from a channel before it is sent on.
CHUNK: Final = 64 * 1024
#: Terminal sizes a client may ask for.
COLS: Final = (10, 500)
ROWS: Final = (5, 200)

DataType = int | None


# -- a WebSocket joined to a device channel ------------------------------------------------


@dataclass(slots=True)
class PumpEnd:
    """How a pump ended: access revoked, the device's side ended (and its exit status)."""

    revoked: bool = False
    device_ended: bool = False
    exit_status: int | None = None


def clamp(value: object, default: int, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]`` (``default`` when it is not an int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(low, min(high, value))


def _control(text: str) -> dict[str, Any] | None:
    """A client's JSON control message (``None``: not one)."""
    try:
        control = json.loads(text)
    except ValueError:
        return None
    return control if isinstance(control, dict) else None


async def _first(revoked: asyncio.Event, *tasks: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
    """Wait until one of ``tasks`` ends or ``revoked`` is set; the tasks done (empty: revoked)."""
    watch = asyncio.create_task(revoked.wait())
    try:
        done, _ = await asyncio.wait({*tasks, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    return set() if watch in done else {task for task in tasks if task in done}


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def pump_terminal(
    websocket: WebSocket,
    process: asyncssh.SSHClientProcess[bytes],
    *,
    recording: Recording | None,
    size: tuple[int, int],
    revoked: asyncio.Event,
    audience: Audience | None = None,
    owner: bool = True,
) -> PumpEnd:
    """Join a terminal socket to a PTY shell until one side ends or access is revoked.

    Binary frames are keystrokes; text frames are control messages
    (``resize``, ``input``). The shell's output is recorded and fanned out to
    the session's observers (``audience``), whose joins and leaves this socket
    is told of. Observers the owner lets type write into the ``owner``'s terminal
    (not an admin's on another's session). The shell is closed when this returns.
    """
    cols, rows = size
    listener = audience.join(output=False) if audience is not None else None

    async def feed(data: bytes) -> None:
        process.stdin.write(data)
        await process.stdin.drain()

    if audience is not None and owner:
        # Observers the owner lets type write through this terminal.
        audience.feed = feed

    async def announcements() -> None:
        if listener is None:
            return
        while (item := await listener.queue.get()) is not None:
            if isinstance(item, str):
                await websocket.send_text(item)

    async def device_to_browser() -> None:
        while True:
            data = await process.stdout.read(CHUNK)
            if not data:
                break
            if recording is not None:
                recording.output(data)
            if audience is not None:
                audience.publish(data)
            await websocket.send_bytes(data)
        if recording is not None:
            recording.flush()

    async def browser_to_device() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is not None:
                process.stdin.write(data)
                await process.stdin.drain()
                continue
            text = message.get("text")
            control = _control(text) if text is not None else None
            if control is None:
                continue
            if control.get("type") == "resize":
                new_cols = clamp(control.get("cols"), cols, *COLS)
                new_rows = clamp(control.get("rows"), rows, *ROWS)
                process.change_terminal_size(new_cols, new_rows)
                if recording is not None:
                    recording.resize(new_cols, new_rows)
            elif control.get("type") == "input":
                process.stdin.write(str(control.get("data", "")).encode())
                await process.stdin.drain()

    output = asyncio.create_task(device_to_browser())
    inputs = asyncio.create_task(browser_to_device())
    told = asyncio.create_task(announcements())
    end = PumpEnd()
    try:
        done = await _first(revoked, output, inputs)
        end.revoked = not done
        if output in done:
            # The shell's output ended: its exit status follows.
            end.device_ended = True
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(process.wait_closed(), 2.0)
            end.exit_status = process.exit_status
    finally:
        await _stop(output, inputs, told)
        if audience is not None and listener is not None:
            audience.leave(listener)
            if audience.feed is feed:
                audience.feed = None
        process.close()
    return end


async def pump_observer(
    websocket: WebSocket,
    listener: Listener,
    *,
    revoked: asyncio.Event,
    type_in: Callable[[bytes], Awaitable[bool]] | None = None,
) -> PumpEnd:
    """Send a session's output and announcements to an observer; refuse what it sends.

    What an observer types (binary frames and ``input`` controls) reaches the
    device only through ``type_in``, which says whether it was taken (the
    owner let this observer type); otherwise it is answered with
    ``{"type": "error", "detail": "observers cannot type"}``. Ends when the
    observer leaves, falls behind, the session ends (``device_ended``) or its
    access is revoked.
    """

    async def to_observer() -> None:
        while (item := await listener.queue.get()) is not None:
            if isinstance(item, bytes):
                await websocket.send_bytes(item)
            else:
                await websocket.send_text(item)

    async def from_observer() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            control = _control(text) if text is not None else None
            data: bytes | None = message.get("bytes")
            if data is None and control is not None and control.get("type") == "input":
                data = str(control.get("data", "")).encode()
            if data is None:
                continue
            if type_in is None or not await type_in(data):
                await websocket.send_text(json.dumps(OBSERVER_CANNOT_TYPE))

    output = asyncio.create_task(to_observer())
    inputs = asyncio.create_task(from_observer())
    end = PumpEnd()
    try:
        done = await _first(revoked, output, inputs)
        end.revoked = not done
        end.device_ended = output in done
    finally:
        await _stop(output, inputs)
    return end


#: What an observer's keystrokes get back.
OBSERVER_CANNOT_TYPE: Final = {"type": "error", "detail": "observers cannot type"}


async def pump_forward(
    websocket: WebSocket,
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
    *,
    revoked: asyncio.Event,
) -> PumpEnd:
    """Join a forward socket to a service's byte stream until both sides are done.

    The text frame ``{"type": "eof"}`` half-closes: the service's answer still
    comes back until the service ends it. A client that leaves gives the
    service a moment to finish. The stream is closed when this returns.
    """

    async def device_to_client() -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await websocket.send_bytes(data)

    async def client_to_device() -> bool:
        """Copy the client's bytes; ``True`` when it half-closed, ``False`` when it left."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return False
            data = message.get("bytes")
            if data:
                writer.write(data)
                await writer.drain()
            elif message.get("text") and _is_eof(message["text"]):
                # The client's side is done; the service's answer may still come.
                with contextlib.suppress(Exception):
                    writer.write_eof()
                return True

    down = asyncio.create_task(device_to_client())
    up = asyncio.create_task(client_to_device())
    end = PumpEnd()
    try:
        done = await _first(revoked, down, up)
        end.revoked = not done
        if up.done() and not down.done() and not end.revoked:
            if up.exception() is None and up.result():
                # Half-closed: the answer flows until the service ends it.
                await down
            else:
                # The client is gone: give the service a moment to finish, then stop.
                with contextlib.suppress(Exception):
                    writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), 1.0)
        end.device_ended = down.done()
    except WebSocketDisconnect:
        pass
    finally:
        await _stop(down, up)
        writer.close()
    return end


def _is_eof(text: str) -> bool:
    control = _control(text)
    return control is not None and control.get("type") == "eof"


# -- an SSH channel joined to a device channel ---------------------------------------------


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


class BridgedChannel:
    """The channel callbacks every bridged channel shares (mixed into an asyncssh session).

    Attach the channel, hold what arrives until the twin is linked, pass data
    and EOF on, pause and resume the twin with this side's send buffer, and
    close the twin when this channel closes (:meth:`channel_closed`, which a
    subclass may override). Set :attr:`end` in ``__init__``.
    """

    end: ChannelEnd

    def connection_made(self, chan: Any) -> None:
        self.end.attach(chan)

    def session_started(self) -> None:
        # Hold the first bytes (a VNC banner, a shell's prompt) until the twin is there.
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
        self.end.lost()
        self.channel_closed(exc)

    def channel_closed(self, exc: Exception | None) -> None:
        """This channel closed: close the twin's (by default)."""
        del exc
        if self.end.peer is not None:
            self.end.peer.close()
