"""The socket half of the operator's client: the session sockets, and ``fieldlink connect``.

- ``fieldlink connect DEVICE SERVICE`` listens on 127.0.0.1 and bridges each local
  connection through ``WS /api/v1/sessions/{id}/forward/{service}``.
- ``fieldlink ssh DEVICE`` (:mod:`server.client.terminal`) is a shell in the local
  terminal over ``WS /api/v1/sessions/{id}/terminal``, through :func:`dial` and
  :func:`close_error` here.

Both get their session from :func:`server.client.sessions.operator_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Final

import httpx2 as httpx
import typer

from server.client.api import LONG_POLL_S, ApiClient, part
from server.client.sessions import (
    NewSessionOption,
    ReasonOption,
    SessionEnded,
    SessionOption,
    closed_message,
    operator_session,
    say,
)
from shared.cli_help import help_text
from shared.cli_language import N_, tr
from shared.errors import AuthError, FieldlinkError, UnavailableError
from shared.wire import (
    WS_FORBIDDEN,
    WS_GOING_AWAY,
    WS_NORMAL,
    WS_NOT_FOUND,
    WS_SESSION_CLOSED,
    WS_UNAUTHORIZED,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

#: Bytes read from a local socket or stdin before they go out as one WebSocket message.
CHUNK: Final = 256 * 1024
#: Largest message accepted from the server (it sends at most 64 KiB).
MAX_MESSAGE: Final = 4 * 1024 * 1024
#: Tells the server that the local side sent its last byte (half-close).
EOF_MESSAGE: Final = json.dumps({"type": "eof"})


class ServiceRefused(FieldlinkError):
    """The device refused to forward to the service."""


# -- fieldlink connect ----------------------------------------------------------------------


async def dial(url: str, headers: dict[str, str]) -> ClientConnection:
    """Open a session socket (raises one-line errors)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        return await connect(
            url,
            additional_headers=headers,
            compression=None,
            max_size=MAX_MESSAGE,
            max_queue=16,
            write_limit=(2 * CHUNK, CHUNK // 2),
            open_timeout=30,
            close_timeout=5,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        msg = tr("the server refused the session socket (HTTP %(status)s)", status=status)
        raise (AuthError(msg) if status in (401, 403) else UnavailableError(msg)) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        msg = tr("cannot open %(url)s: %(error)s", url=url.split("?")[0], error=exc)
        raise UnavailableError(msg) from exc


def close_error(exc: Exception, what: str) -> FieldlinkError | None:
    """The error a session socket's close code means (``None`` for a normal close).

    Args:
        exc: What ``recv`` or ``send`` raised when the socket closed.
        what: What the socket carried, for the message (``web``, ``the shell``).
    """
    from websockets.exceptions import ConnectionClosed

    frame = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if frame is None or frame.code in (WS_NORMAL, WS_GOING_AWAY):
        return None
    reason = frame.reason or tr("no reason given")
    if frame.code == WS_UNAUTHORIZED:
        msg = tr("%(detail)s (run `fieldlink login` again)", detail=reason)
        return AuthError(msg)
    if frame.code == WS_FORBIDDEN:
        msg = tr("%(what)s refused: %(reason)s", what=what, reason=reason)
        return ServiceRefused(msg)
    if frame.code == WS_NOT_FOUND:
        msg = f"{what}: {reason}"
        return FieldlinkError(msg)
    if frame.code == WS_SESSION_CLOSED:
        msg = tr("the session closed: %(reason)s", reason=reason)
        return SessionEnded(msg)
    msg = tr(
        "%(what)s: the server closed the socket (%(code)s %(reason)s)",
        what=what,
        code=frame.code,
        reason=reason,
    )
    return UnavailableError(msg)


class ForwardBridge:
    """Local TCP connections, each bridged through a forward socket of its own.

    Args:
        api: The API client (server URL and token).
        session_id: The active session.
        service: The device's service name (``web``, ``vnc``...).
    """

    def __init__(self, api: ApiClient, session_id: str, service: str) -> None:
        self.url = api.ws_url(f"/sessions/{part(session_id)}/forward/{part(service)}")
        self.headers = api.auth_headers
        self.service = service
        self.what = tr("the forward to %(service)s", service=service)
        self.connections: set[asyncio.Task[None]] = set()

    async def check(self) -> None:
        """Open one forward and close it again: the device accepts the service.

        The server sends ``{"type": "state", "state": "active"}`` once the
        forward is open (and other states while the session is set up); a
        refusal closes the socket with 4403. Data from the service means open too.

        Raises:
            ServiceRefused: The device refused the service.
            SessionEnded: The session closed.
        """
        from websockets.exceptions import ConnectionClosed

        websocket = await dial(self.url, self.headers)
        try:
            while True:
                try:
                    message = await websocket.recv()
                except ConnectionClosed as exc:
                    error = close_error(exc, self.what)
                    if error is not None:
                        raise error from None
                    return  # the service accepted and closed at once: it is there
                if isinstance(message, bytes):
                    return
                control = control_message(message)
                if control.get("type") != "state":
                    continue
                if control.get("state") == "active":
                    return
                if control.get("state") == "closed":
                    raise SessionEnded(closed_frame_message(control))
        finally:
            await websocket.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bridge one local connection until either side ends it."""
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        websocket: ClientConnection | None = None
        try:
            websocket = await dial(self.url, self.headers)
            await self._copy(reader, writer, websocket)
        except FieldlinkError as exc:
            say(tr("error: %(message)s", message=exc))
        except asyncio.CancelledError:
            # Stopping. The task ends here: Python 3.11's start_server would log a
            # handler's cancellation as an error with a traceback.
            pass
        finally:
            writer.close()
            if websocket is not None:
                with contextlib.suppress(Exception):
                    await websocket.close()
            if task is not None:
                self.connections.discard(task)

    async def _copy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        websocket: ClientConnection,
    ) -> None:
        from websockets.exceptions import ConnectionClosed

        async def upstream() -> None:
            try:
                while True:
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    await websocket.send(data)
                # The local side is done sending; the answer may still come back.
                await websocket.send(EOF_MESSAGE)
            except ConnectionClosed:
                pass
            except OSError:
                await websocket.close()

        sending = asyncio.create_task(upstream())
        try:
            while True:
                try:
                    message = await websocket.recv()
                except ConnectionClosed as exc:
                    error = close_error(exc, self.what)
                    if isinstance(error, ServiceRefused):
                        say(tr("error: %(message)s", message=error))
                    break
                if isinstance(message, bytes):
                    writer.write(message)
                    await writer.drain()
        except OSError:
            pass  # the local client is gone
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

    async def stop(self) -> None:
        """End every bridged connection."""
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)


def closed_frame_message(control: dict[str, Any]) -> str:
    """The one line for a socket's ``{"type": "state", "state": "closed", ...}``."""
    text = tr("the session closed: %(reason)s", reason=control.get("close_reason") or tr("closed"))
    if control.get("detail"):
        text += f" ({control['detail']})"
    return text


def control_message(text: str) -> dict[str, Any]:
    """A text frame's JSON object (``{}`` for anything else)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def watch_until_closed(api: ApiClient, session: dict[str, Any]) -> dict[str, Any]:
    """Long-poll the session (without blocking the loop) until it is closed; return it."""
    state = session["state"]
    path = f"/api/v1/sessions/{part(session['id'])}"
    async with httpx.AsyncClient(
        base_url=api.server, headers=api.auth_headers, timeout=LONG_POLL_S + 30.0
    ) as http:
        while True:
            started = time.monotonic()
            try:
                response = await http.get(path, params={"wait_s": LONG_POLL_S, "since": state})
            except httpx.HTTPError:
                await asyncio.sleep(2.0)  # the server restarts: the forwards will tell
                continue
            if response.status_code in (401, 403, 404):
                try:
                    detail = response.json().get("detail")
                except ValueError:
                    detail = response.text[:200]
                msg = tr(
                    "session %(id)s: %(status)s: %(detail)s",
                    id=session["id"],
                    status=response.status_code,
                    detail=detail,
                )
                raise FieldlinkError(msg)
            if response.status_code == 200:
                current: dict[str, Any] = response.json()
                if current["state"] == "closed":
                    return current
                if current["state"] != state:
                    state = current["state"]
                    continue
            if time.monotonic() - started < 1.0:
                await asyncio.sleep(1.0)


async def serve_forward(
    api: ApiClient, session: dict[str, Any], service: str, port: int
) -> dict[str, Any]:
    """Listen on 127.0.0.1:``port`` and bridge to the service until the session closes.

    Returns:
        The session, closed.
    """
    bridge = ForwardBridge(api, session["id"], service)
    await bridge.check()
    try:
        server = await asyncio.start_server(bridge.handle, "127.0.0.1", port, limit=CHUNK)
    except OSError as exc:
        msg = tr(
            "cannot listen on 127.0.0.1:%(port)s: %(error)s", port=port, error=exc.strerror or exc
        )
        raise FieldlinkError(msg) from exc
    bound = server.sockets[0].getsockname()[1]
    typer.echo(
        tr(
            "forwarding 127.0.0.1:%(port)s -> %(device)s:%(service)s",
            port=bound,
            device=session["device_id"],
            service=service,
        )
    )
    watcher = asyncio.create_task(watch_until_closed(api, session))
    try:
        return await watcher
    finally:
        server.close()
        watcher.cancel()
        await bridge.stop()
        await asyncio.gather(watcher, return_exceptions=True)
        await server.wait_closed()


@help_text(
    N_(
        "Forward a local port to one of a device's allowlisted services; Ctrl-C to stop.\n"
        "\n"
        "Prints `forwarding 127.0.0.1:PORT -> DEVICE:SERVICE` once listening. The\n"
        "session it opened is closed when it stops."
    )
)
def connect_command(
    device: Annotated[str, typer.Argument(help=N_("the device id"))],
    service: Annotated[str, typer.Argument(help=N_("the device's service, e.g. web or vnc"))],
    port: Annotated[
        int,
        typer.Option(
            "--port",
            "-p",
            help=N_("local port on 127.0.0.1 (0: pick a free one)"),
            min=0,
            max=65535,
        ),
    ] = 0,
    reason: ReasonOption = None,
    session_id: SessionOption = None,
    new_session: NewSessionOption = False,
) -> None:
    from server.client.lifetime import run_async

    try:
        with operator_session(
            device,
            session_id=session_id,
            reason=reason or f"fieldlink connect {device} {service}",
            services=[service],
            given_reason=reason,
            new=new_session,
        ) as (api, session):
            try:
                ended = run_async(serve_forward(api, session, service, port))
            except KeyboardInterrupt:
                say(tr("stopped (session %(id)s)", id=session["id"]))
                raise
    except KeyboardInterrupt:
        return
    raise SessionEnded(closed_message(ended))
