"""Remote sessions from the operator's command line: ``session``, ``exec``, ``connect``, ``ssh``.

Everything goes through the API (docs/protocol.md) with the token ``fieldlink
login`` saved:

- ``fieldlink session open|list|show|close|recording`` manage sessions; ``open``
  follows the new session (the site's approval, the device connecting) until it
  is active or closed.
- ``fieldlink exec DEVICE -- CMD`` runs one command (``POST .../exec``) and exits
  with its status.
- ``fieldlink connect DEVICE SERVICE`` listens on 127.0.0.1 and bridges each local
  connection through ``WS /api/v1/sessions/{id}/forward/{service}``.
- ``fieldlink ssh DEVICE`` is a shell in the local terminal over
  ``WS /api/v1/sessions/{id}/terminal``.

``exec``, ``connect`` and ``ssh`` open a session of their own (and close it when
done, Ctrl-C included) unless ``--session`` names an open one. ``exec`` and
``ssh`` exit 255 on their own errors, as OpenSSH does, so that a remote exit
status stays recognisable; every error is one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, cast
from urllib.parse import quote, urlencode

import httpx2 as httpx
import typer

from server.client import ApiClient, ApiError
from shared.errors import AuthError, FieldlinkError, UnavailableError
from shared.tunnel import ws_url
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
#: How long one ``GET /sessions/{id}?wait_s=`` may wait on the server.
LONG_POLL_S: Final = 25.0
#: Our own errors, out of the way of remote exit statuses (as ``ssh`` does).
OWN_ERROR: Final = 255
#: Piped input to a shell: end of file, and how quiet the output is before it is sent again.
CTRL_D: Final = b"\x04"
QUIET_S: Final = 0.5
#: Tells the server that the local side sent its last byte (half-close).
EOF_MESSAGE: Final = json.dumps({"type": "eof"})

_PROGRESS: Final = {
    "requested": "requested, waiting for the device to answer",
    "awaiting_consent": "awaiting the site's approval",
    "connecting": "the device is connecting",
    "active": "active",
}


class SessionEnded(FieldlinkError):
    """The session closed before (or while) it could be used."""


class ServiceRefused(FieldlinkError):
    """The device refused to forward to the service."""


def _closed_message(session: dict[str, Any]) -> str:
    text = f"session {session['id']} closed: {session.get('close_reason') or 'closed'}"
    if session.get("detail"):
        text += f" ({session['detail']})"
    return text


def _part(value: str) -> str:
    """One path segment, quoted so that an id cannot reach another route."""
    return quote(value, safe="")


class SessionApi(ApiClient):
    """:class:`ApiClient` with what sessions add: long polls, sockets and raw downloads."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        super().__init__(server, token, timeout)
        self.token = token

    @property
    def auth_headers(self) -> dict[str, str]:
        """The bearer header the sockets authenticate with."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ws_url(self, path: str, **query: Any) -> str:
        """``ws(s)://server/api/v1{path}?query`` for a session socket."""
        return ws_url(self.server, f"/api/v1{path}") + (f"?{urlencode(query)}" if query else "")

    def open_session(
        self,
        device_id: str,
        *,
        reason: str,
        incident_id: int | None = None,
        services: list[str] | None = None,
    ) -> dict[str, Any]:
        """``POST /devices/{id}/sessions``: the new session (``requested``)."""
        body: dict[str, Any] = {"reason": reason}
        if incident_id is not None:
            body["incident_id"] = incident_id
        if services:
            body["services"] = services
        session: dict[str, Any] = self.request(
            "POST",
            f"/devices/{_part(device_id)}/sessions",
            json=body,
            headers={"X-Fieldlink-Origin": "cli"},
        )
        return session

    def session(self, session_id: str, *, since: str | None = None) -> dict[str, Any]:
        """One session; with ``since``, once its state has left ``since`` (or a long poll)."""
        params: dict[str, Any] = {}
        timeout = None
        if since is not None:
            params = {"wait_s": LONG_POLL_S, "since": since}
            timeout = LONG_POLL_S + 30.0
        answer: dict[str, Any] = self.request(
            "GET",
            f"/sessions/{_part(session_id)}",
            params=params,
            **({"timeout": timeout} if timeout else {}),
        )
        return answer

    def close_session(self, session_id: str) -> dict[str, Any]:
        """``DELETE /sessions/{id}``: the closed session."""
        answer: dict[str, Any] = self.request("DELETE", f"/sessions/{_part(session_id)}")
        return answer

    def download(self, path: str) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers of ``GET /api/v1{path}``.

        Raises:
            UnavailableError, AuthError, ApiError: As :meth:`ApiClient.request`.
        """
        try:
            response = self._http.get(f"/api/v1{path}")
        except httpx.HTTPError as exc:
            msg = f"cannot reach {self.server}: {exc}"
            raise UnavailableError(msg) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if response.status_code == 401:
                msg = f"{detail} (run `fieldlink login` again)"
                raise AuthError(msg)
            msg = f"{response.status_code}: {detail}"
            raise ApiError(msg)
        return response.content, dict(response.headers)


def _api() -> SessionApi:
    return cast(SessionApi, SessionApi.from_credentials())  # it builds ``cls``


def follow(
    api: SessionApi,
    session: dict[str, Any],
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Long-poll a session until it is ``active`` or ``closed``; ``report`` sees each change."""
    while session["state"] not in ("active", "closed"):
        previous = session["state"]
        session = api.session(session["id"], since=previous)
        if session["state"] == previous:
            # A server that does not follow this session answers at once: do not spin.
            time.sleep(0.5)
        elif report is not None:
            report(session)
    return session


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _report_state(session: dict[str, Any]) -> None:
    if session["state"] in _PROGRESS:
        _say(f"session {session['id']}: {_PROGRESS[session['state']]}")


def _report_consent(session: dict[str, Any]) -> None:
    # Only the wait a person must act on; the rest would clutter a command's stderr.
    if session["state"] == "awaiting_consent":
        _report_state(session)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def using_session(
    api: SessionApi,
    device_id: str,
    *,
    session_id: str | None,
    reason: str,
    services: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """An active session to ``device_id``: the one named, or a new one closed on the way out.

    Raises:
        SessionEnded: It closed before it was active.
        FieldlinkError: ``session_id`` belongs to another device, or the API refused.
    """
    opened = session_id is None
    if session_id is None:
        session = api.open_session(device_id, reason=reason, services=services)
    else:
        session = api.session(session_id)
        if session["device_id"] != device_id:
            msg = f"session {session_id} is to {session['device_id']}, not {device_id}"
            raise FieldlinkError(msg)
    try:
        session = follow(api, session, _report_consent)
        if session["state"] == "closed":
            raise SessionEnded(_closed_message(session))
        yield session
    finally:
        if opened:
            with contextlib.suppress(FieldlinkError):
                api.close_session(session["id"])


def _own_errors_exit_255(function: Callable[[], int]) -> int:
    """Run ``function``; turn fieldlink's own errors into one line and exit status 255."""
    try:
        with interrupted_by_termination():
            return function()
    except FieldlinkError as exc:
        _say(f"error: {exc}")
        return OWN_ERROR


# -- fieldlink session ... ------------------------------------------------------------------

session_app = typer.Typer(
    help="Remote sessions: open, list, show, close, and download their recordings.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


class StateFilter(StrEnum):
    """What ``session list --state`` accepts."""

    OPEN = "open"
    REQUESTED = "requested"
    AWAITING_CONSENT = "awaiting_consent"
    CONNECTING = "connecting"
    ACTIVE = "active"
    CLOSED = "closed"


@session_app.command("open")
def open_command(
    device: Annotated[str, typer.Argument(help="the device id")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (shown to the site, audited)")],
    incident: Annotated[
        int | None, typer.Option("--incident", help="the incident this session serves")
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option("--service", "-s", help="a service it may reach (repeat; default: all)"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="follow it until active or closed")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Open a session to a device; print its id and follow it until it is active.

    Exits non-zero when the session closes instead (site denied, device
    unreachable...), with its close reason.
    """
    api = _api()
    try:
        session = api.open_session(device, reason=reason, incident_id=incident, services=service)
        if not as_json:
            typer.echo(session["id"])
            _say(f"session {session['id']} to {device}: {_PROGRESS.get(session['state'], '')}")
        if wait:
            try:
                session = follow(api, session, None if as_json else _report_state)
            except KeyboardInterrupt:
                _say(f"interrupted: closing session {session['id']}")
                with contextlib.suppress(FieldlinkError):
                    api.close_session(session["id"])
                raise
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(session, indent=2))
    if session["state"] == "closed":
        raise SessionEnded(_closed_message(session))
    if wait and not as_json:
        _say(f"close it with: fieldlink session close {session['id']}")


def _when(value: Any) -> str:
    return str(value or "-")[:19].replace("T", " ")


def _state_text(session: dict[str, Any]) -> str:
    if session["state"] == "closed" and session.get("close_reason"):
        return f"closed ({session['close_reason']})"
    return str(session["state"])


@session_app.command("list")
def list_command(
    device: Annotated[str | None, typer.Option("--device", "-d", help="only this device")] = None,
    state: Annotated[
        StateFilter | None, typer.Option("--state", help="open (not closed) or one state")
    ] = None,
    operator: Annotated[str | None, typer.Option(help="only this operator's")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List sessions, newest first."""
    params: dict[str, Any] = {"limit": limit}
    wanted = state.value if state is not None else None
    for key, value in (("device_id", device), ("state", wanted), ("operator", operator)):
        if value is not None:
            params[key] = value
    api = _api()
    try:
        page = api.request("GET", "/sessions", params=params)
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [("SESSION", "DEVICE", "OPERATOR", "STATE", "CREATED", "REASON")]
    for s in page["items"]:
        rows.append(
            (
                s["id"],
                s["device_id"],
                s["operator"],
                _state_text(s),
                _when(s.get("created_at")),
                _short(s["reason"].replace("\n", " "), 40),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    typer.echo(f"{len(page['items'])} of {page['count']} sessions")


def format_session(s: dict[str, Any]) -> str:
    """A session as ``field  value`` lines."""
    state = _state_text(s)
    if s["state"] == "closed" and s.get("detail"):
        state += f": {s['detail']}"
    services = ", ".join(s.get("services") or []) or "all the site allows"
    if s.get("services_used"):
        services += f" (used: {', '.join(s['services_used'])})"
    recording = "-"
    if s.get("has_recording"):
        recording = f"sha256 {s.get('recording_sha256')} (fieldlink session recording {s['id']})"
    lines = [
        ("session", s["id"]),
        ("device", s["device_id"]),
        ("operator", s["operator"]),
        ("state", state),
        ("reason", s["reason"]),
        ("incident", str(s["incident_id"]) if s.get("incident_id") is not None else "-"),
        ("services", services),
        ("origin", s.get("origin") or "-"),
        ("created", _when(s.get("created_at"))),
        ("started", _when(s.get("started_at"))),
        ("ended", _when(s.get("ended_at"))),
        ("bytes", f"{s['bytes_to_device']} to the device, {s['bytes_from_device']} from it"),
        ("recording", recording),
    ]
    for refusal in s.get("refusals") or []:
        lines.append(("refused", json.dumps(refusal, sort_keys=True)))
    return "\n".join(f"{name:<10} {value}" for name, value in lines)


@session_app.command("show")
def show_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="the session id")],
    as_json: JsonOption = False,
) -> None:
    """Show one session: state, close reason, services used, bytes, recording."""
    api = _api()
    try:
        session = api.session(session_id)
    finally:
        api.close()
    typer.echo(json.dumps(session, indent=2) if as_json else format_session(session))


@session_app.command("close")
def close_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="the session id")],
    as_json: JsonOption = False,
) -> None:
    """Close a session (the tunnel is down when this returns)."""
    api = _api()
    try:
        session = api.close_session(session_id)
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(session, indent=2))
    else:
        typer.echo(f"session {session['id']}: {_state_text(session)}")


@session_app.command("recording")
def recording_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="the session id")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write to this file (default: stdout)"),
    ] = None,
) -> None:
    """Download a closed session's shell recording (asciicast v2, for `asciinema play`)."""
    api = _api()
    try:
        body, headers = api.download(f"/sessions/{_part(session_id)}/recording")
    finally:
        api.close()
    expected = headers.get("x-content-sha256")
    if expected and hashlib.sha256(body).hexdigest() != expected:
        msg = f"the recording of {session_id} does not match its SHA-256 ({expected})"
        raise FieldlinkError(msg)
    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(body)
    except OSError as exc:
        msg = f"cannot write {output}: {exc.strerror or exc}"
        raise FieldlinkError(msg) from exc
    _say(f"{output}: {len(body)} bytes, sha256 {expected or hashlib.sha256(body).hexdigest()}")


# -- fieldlink exec -------------------------------------------------------------------------

ReasonOption = Annotated[
    str | None, typer.Option("--reason", "-r", help="why (shown to the site, audited)")
]
SessionOption = Annotated[
    str | None, typer.Option("--session", help="use this open session instead of a new one")
]


def command_line(words: list[str]) -> str:
    """The command text for the device's shell.

    One argument is a shell command line as written (``'ls | wc -l'``); several
    are quoted word by word, so ``sh -c 'exit 3'`` keeps its three words (where
    ``ssh`` would join them with spaces).
    """
    return words[0] if len(words) == 1 else shlex.join(words)


def exec_command(
    device: Annotated[str, typer.Argument(help="the device id")],
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="-- CMD...",
            help="the command: one argument is a shell line, several are quoted word by word",
            show_default=False,
        ),
    ],
    reason: ReasonOption = None,
    session_id: SessionOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="seconds the command may run", min=0.1, max=600)
    ] = 30.0,
) -> None:
    """Run one command on a device: its stdout and stderr here, its exit status as ours.

    Exits 255 on fieldlink's own errors (not logged in, unknown device, the
    session closed...).
    """
    text = command_line(command)

    def run() -> int:
        api = _api()
        try:
            with using_session(
                api,
                device,
                session_id=session_id,
                reason=reason or _short(f"fieldlink exec: {text}"),
            ) as session:
                result = api.request(
                    "POST",
                    f"/sessions/{_part(session['id'])}/exec",
                    json={"command": text, "timeout_s": timeout},
                    timeout=timeout + 30.0,
                )
        finally:
            api.close()
        sys.stdout.write(result["stdout"])
        sys.stdout.flush()
        sys.stderr.write(result["stderr"])
        sys.stderr.flush()
        status = result["exit_status"]
        if status is None or not 0 <= status <= 255:
            _say("error: the command ended without an exit status (killed by a signal?)")
            return OWN_ERROR
        return int(status)

    raise typer.Exit(_own_errors_exit_255(run))


# -- fieldlink connect ----------------------------------------------------------------------


async def _dial(url: str, headers: dict[str, str]) -> ClientConnection:
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
        msg = f"the server refused the session socket (HTTP {status})"
        raise (AuthError(msg) if status in (401, 403) else UnavailableError(msg)) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        msg = f"cannot open {url.split('?')[0]}: {exc}"
        raise UnavailableError(msg) from exc


def _close_error(exc: Exception, what: str) -> FieldlinkError | None:
    """The error a session socket's close code means (``None`` for a normal close).

    Args:
        exc: What ``recv`` or ``send`` raised when the socket closed.
        what: What the socket carried, for the message (``web``, ``the shell``).
    """
    from websockets.exceptions import ConnectionClosed

    frame = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if frame is None or frame.code in (WS_NORMAL, WS_GOING_AWAY):
        return None
    reason = frame.reason or "no reason given"
    if frame.code == WS_UNAUTHORIZED:
        msg = f"{reason} (run `fieldlink login` again)"
        return AuthError(msg)
    if frame.code == WS_FORBIDDEN:
        msg = f"{what} refused: {reason}"
        return ServiceRefused(msg)
    if frame.code == WS_NOT_FOUND:
        msg = f"{what}: {reason}"
        return FieldlinkError(msg)
    if frame.code == WS_SESSION_CLOSED:
        msg = f"the session closed: {reason}"
        return SessionEnded(msg)
    msg = f"{what}: the server closed the socket ({frame.code} {reason})"
    return UnavailableError(msg)


class ForwardBridge:
    """Local TCP connections, each bridged through a forward socket of its own.

    Args:
        api: The API client (server URL and token).
        session_id: The active session.
        service: The device's service name (``web``, ``vnc``...).
    """

    def __init__(self, api: SessionApi, session_id: str, service: str) -> None:
        self.url = api.ws_url(f"/sessions/{_part(session_id)}/forward/{_part(service)}")
        self.headers = api.auth_headers
        self.service = service
        self.what = f"the forward to {service}"
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

        websocket = await _dial(self.url, self.headers)
        try:
            while True:
                try:
                    message = await websocket.recv()
                except ConnectionClosed as exc:
                    error = _close_error(exc, self.what)
                    if error is not None:
                        raise error from None
                    return  # the service accepted and closed at once: it is there
                if isinstance(message, bytes):
                    return
                control = _control(message)
                if control.get("type") != "state":
                    continue
                if control.get("state") == "active":
                    return
                if control.get("state") == "closed":
                    raise SessionEnded(_closed_frame_message(control))
        finally:
            await websocket.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bridge one local connection until either side ends it."""
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        websocket: ClientConnection | None = None
        try:
            websocket = await _dial(self.url, self.headers)
            await self._copy(reader, writer, websocket)
        except FieldlinkError as exc:
            _say(f"error: {exc}")
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
                    error = _close_error(exc, self.what)
                    if isinstance(error, ServiceRefused):
                        _say(f"error: {error}")
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


def _closed_frame_message(control: dict[str, Any]) -> str:
    """The one line for a socket's ``{"type": "state", "state": "closed", ...}``."""
    text = f"the session closed: {control.get('close_reason') or 'closed'}"
    if control.get("detail"):
        text += f" ({control['detail']})"
    return text


def _control(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def watch_until_closed(api: SessionApi, session: dict[str, Any]) -> dict[str, Any]:
    """Long-poll the session (without blocking the loop) until it is closed; return it."""
    state = session["state"]
    path = f"/api/v1/sessions/{_part(session['id'])}"
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
                msg = f"session {session['id']}: {response.status_code}: {detail}"
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
    api: SessionApi, session: dict[str, Any], service: str, port: int
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
        msg = f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
        raise FieldlinkError(msg) from exc
    bound = server.sockets[0].getsockname()[1]
    typer.echo(f"forwarding 127.0.0.1:{bound} -> {session['device_id']}:{service}")
    watcher = asyncio.create_task(watch_until_closed(api, session))
    try:
        return await watcher
    finally:
        server.close()
        watcher.cancel()
        await bridge.stop()
        await asyncio.gather(watcher, return_exceptions=True)
        await server.wait_closed()


def connect_command(
    device: Annotated[str, typer.Argument(help="the device id")],
    service: Annotated[str, typer.Argument(help="the device's service, e.g. web or vnc")],
    port: Annotated[
        int,
        typer.Option(
            "--port", "-p", help="local port on 127.0.0.1 (0: pick a free one)", min=0, max=65535
        ),
    ] = 0,
    reason: ReasonOption = None,
    session_id: SessionOption = None,
) -> None:
    """Forward a local port to one of a device's allowlisted services; Ctrl-C to stop.

    Prints `forwarding 127.0.0.1:PORT -> DEVICE:SERVICE` once listening. The
    session it opened is closed when it stops.
    """
    api = _api()
    try:
        with (
            interrupted_by_termination(),
            using_session(
                api,
                device,
                session_id=session_id,
                reason=reason or f"fieldlink connect {device} {service}",
                services=[service],
            ) as session,
        ):
            try:
                ended = asyncio.run(serve_forward(api, session, service, port))
            except KeyboardInterrupt:
                closing = f"; closing session {session['id']}" if session_id is None else ""
                _say(f"stopped{closing}")
                return
            raise SessionEnded(_closed_message(ended))
    finally:
        api.close()


# -- fieldlink ssh --------------------------------------------------------------------------


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


async def run_terminal(api: SessionApi, session: dict[str, Any], *, interactive: bool) -> int:
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
    url = api.ws_url(f"/sessions/{_part(session['id'])}/terminal", cols=cols, rows=rows, term=term)
    websocket = await _dial(url, api.auth_headers)
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
                ended_by = _close_error(exc, "the shell")
                break
            if isinstance(message, bytes):
                last_output[:] = [loop.time(), True]
                try:
                    _write_fd(stdout_fd, message)
                except OSError:
                    break  # the local terminal is gone (hung up, or stdout closed)
                continue
            control = _control(message)
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
            raise SessionEnded(_closed_frame_message(closed))
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


@contextlib.contextmanager
def interrupted_by_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP act as Ctrl-C, so that the session is closed on the way out.

    They are passed on as SIGINT, which ``asyncio.run`` turns into cancelling its
    task (its clean-up runs) and plain code into :class:`KeyboardInterrupt`.
    """

    def as_interrupt(_signum: int, _frame: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = {sig: signal.signal(sig, as_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ssh_command(
    device: Annotated[str, typer.Argument(help="the device id")],
    reason: ReasonOption = None,
    session_id: SessionOption = None,
) -> None:
    """A shell on a device in this terminal (stdin and stdout piped when not a terminal).

    Exits with the remote shell's status, or 255 on fieldlink's own errors.
    """
    interactive = sys.stdin.isatty()

    def run() -> int:
        api = _api()
        try:
            with using_session(
                api,
                device,
                session_id=session_id,
                reason=reason or f"fieldlink ssh {device}",
            ) as session:
                if not interactive:
                    return asyncio.run(run_terminal(api, session, interactive=False))
                with raw_terminal(sys.stdin.fileno()):
                    status = asyncio.run(run_terminal(api, session, interactive=True))
                return status
        finally:
            api.close()

    raise typer.Exit(_own_errors_exit_255(run))
