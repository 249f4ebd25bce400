"""``fieldlink ssh DEVICE``: a shell on a device in the local terminal.

The terminal (or piped stdin and stdout) is bridged with
``WS /api/v1/sessions/{id}/terminal``; the session comes from
:func:`server.client.sessions.operator_session`, the socket from
:func:`server.client.sockets.dial`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Final

import typer

from server.client.api import ApiClient, part
from server.client.lifetime import run_async
from server.client.sessions import (
    OWN_ERROR,
    NewSessionOption,
    ReasonOption,
    SessionEnded,
    SessionOption,
    operator_session,
    own_errors_exit_255,
)
from server.client.sockets import CHUNK, close_error, closed_frame_message, control_message, dial
from shared.cli_help import help_text
from shared.cli_language import N_, tr
from shared.errors import FieldlinkError

#: Piped input to a shell: end of file, and how quiet the output is before it is sent again.
CTRL_D: Final = b"\x04"
QUIET_S: Final = 0.5


async def _read_fd(fd: int) -> bytes:
    """One read of ``fd`` once it is readable (b"" at end of file); no O_NONBLOCK is set.

    Setting O_NONBLOCK on a terminal would change it for stdout too (one open file).
    """
    loop = asyncio.get_running_loop()
    try:
        future: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not future.done():
                future.set_result(None)

        loop.add_reader(fd, readable)
    except (PermissionError, ValueError, OSError):
        # A regular file cannot be polled: it never blocks for long either.
        return await asyncio.to_thread(os.read, fd, CHUNK)
    try:
        await future
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return await _read_fd(fd)
    except OSError:
        return b""


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[written:]


async def run_terminal(api: ApiClient, session: dict[str, Any], *, interactive: bool) -> int:
    """Bridge the local terminal (or stdin and stdout) with the session's shell.

    Returns:
        The remote shell's exit status.

    Raises:
        SessionEnded: The session closed before the shell exited.
    """
    from websockets.exceptions import ConnectionClosed

    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    if interactive:
        size = os.get_terminal_size(stdout_fd if os.isatty(stdout_fd) else stdin_fd)
        cols, rows, term = size.columns, size.lines, os.environ.get("TERM") or "xterm-256color"
    else:
        cols, rows, term = 80, 24, "dumb"
    url = api.ws_url(f"/sessions/{part(session['id'])}/terminal", cols=cols, rows=rows, term=term)
    websocket = await dial(url, api.auth_headers)
    loop = asyncio.get_running_loop()
    resizes: set[asyncio.Task[None]] = set()

    def on_resize() -> None:
        size = os.get_terminal_size(stdin_fd)
        message = json.dumps({"type": "resize", "cols": size.columns, "rows": size.lines})
        task = loop.create_task(websocket.send(message))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    input_ended = asyncio.Event()
    last_output = [loop.time(), True]  # when, and whether output came since the last Ctrl-D

    async def upstream() -> None:
        last = b"\n"
        try:
            while True:
                data = await _read_fd(stdin_fd)
                if not data:
                    break
                last = data[-1:]
                await websocket.send(data)
            if not interactive:
                # End of piped input: end the line, then Ctrl-D as a person would.
                await websocket.send((b"" if last in (b"\n", b"\r") else b"\n") + CTRL_D)
                input_ended.set()
        except ConnectionClosed:
            pass

    async def end_of_input() -> None:
        # A Ctrl-D typed ahead while the shell runs a command is lost when its line
        # editor takes the terminal back; so, once the input has ended, Ctrl-D
        # again whenever the output (a prompt) has gone quiet, until the shell exits.
        await input_ended.wait()
        while True:
            await asyncio.sleep(QUIET_S)
            when, fresh = last_output
            if fresh and loop.time() - when >= QUIET_S:
                last_output[1] = False
                await websocket.send(CTRL_D)

    if interactive:
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
    sending = asyncio.create_task(upstream())
    ending = asyncio.create_task(end_of_input())
    exit_status: int | None = None
    closed: dict[str, Any] | None = None
    ended_by: FieldlinkError | None = None
    try:
        while True:
            try:
                message = await websocket.recv()
            except ConnectionClosed as exc:
                ended_by = close_error(exc, tr("the shell"))
                break
            if isinstance(message, bytes):
                last_output[:] = [loop.time(), True]
                try:
                    _write_fd(stdout_fd, message)
                except OSError:
                    break  # the local terminal is gone (hung up, or stdout closed)
                continue
            control = control_message(message)
            if control.get("type") == "exit":
                exit_status = control.get("exit_status")
            elif control.get("type") == "state" and control.get("state") == "closed":
                closed = control
    finally:
        if interactive:
            loop.remove_signal_handler(signal.SIGWINCH)
        sending.cancel()
        ending.cancel()
        await asyncio.gather(sending, ending, *resizes, return_exceptions=True)
        await websocket.close()
    if exit_status is None:
        if closed is not None:
            raise SessionEnded(closed_frame_message(closed))
        if ended_by is not None:
            raise ended_by
    if isinstance(exit_status, int) and 0 <= exit_status <= 255:
        return exit_status
    return OWN_ERROR


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode (keys go to the device as typed), restored on the way out."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):  # a terminal that hung up
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@help_text(
    N_(
        "A shell on a device in this terminal (stdin and stdout piped when not a terminal).\n"
        "\n"
        "Exits with the remote shell's status, or 255 on fieldlink's own errors."
    )
)
def ssh_command(
    device: Annotated[str, typer.Argument(help=N_("the device id"))],
    reason: ReasonOption = None,
    session_id: SessionOption = None,
    new_session: NewSessionOption = False,
) -> None:
    interactive = sys.stdin.isatty()

    def run() -> int:
        with operator_session(
            device,
            session_id=session_id,
            reason=reason or f"fieldlink ssh {device}",
            given_reason=reason,
            new=new_session,
        ) as (api, session):
            if not interactive:
                return run_async(run_terminal(api, session, interactive=False))
            with raw_terminal(sys.stdin.fileno()):
                return run_async(run_terminal(api, session, interactive=True))

    raise typer.Exit(own_errors_exit_255(run))
