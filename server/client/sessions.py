"""Remote sessions from the operator's command line: ``session`` and ``exec``.

Everything goes through the API (docs/protocol.md) with the token ``fieldlink
login`` saved:

- ``fieldlink session open|list|show|close|recording`` manage sessions; ``open``
  follows the new session (the site's approval, the device connecting) until it
  is active or closed.
- ``fieldlink exec DEVICE -- CMD`` runs one command (``POST .../exec``) and exits
  with its status.

``exec``, ``connect`` and ``ssh`` (:mod:`server.client.sockets`) get their session
from :func:`operator_session`: a new one (closed when done, Ctrl-C included)
unless ``--session`` names an open one. ``exec`` and ``ssh`` exit 255 on their
own errors, as OpenSSH does, so that a remote exit status stays recognisable;
every error is one line on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from server.client.api import ApiClient
from server.client.tables import echo_page
from shared import exit_codes
from shared.cli_help import examples, help_text
from shared.cli_language import N_, tr
from shared.errors import FieldlinkError

#: Our own errors, out of the way of remote exit statuses (as ``ssh`` does).
OWN_ERROR: Final = exit_codes.REMOTE_OWN_ERROR

_PROGRESS: Final = {
    "requested": N_("requested, waiting for the device to answer"),
    "awaiting_consent": N_("awaiting the site's approval"),
    "connecting": N_("the device is connecting"),
    "active": N_("active"),
}
#: A session's states as a person reads them (the API's values in ``--json``).
_STATES: Final = {
    "requested": N_("requested"),
    "awaiting_consent": N_("awaiting consent"),
    "connecting": N_("connecting"),
    "active": N_("active"),
    "closed": N_("closed"),
}

ReasonOption = Annotated[
    str | None, typer.Option("--reason", "-r", help=N_("why (shown to the site, audited)"))
]
SessionOption = Annotated[
    str | None,
    typer.Option("--session", help=N_("use this open session (default: your open one on DEVICE)")),
]
NewSessionOption = Annotated[
    bool,
    typer.Option(
        "--new-session", help=N_("open a new session even when you have one open on DEVICE")
    ),
]


class SessionEnded(FieldlinkError):
    """The session closed before (or while) it could be used."""


def closed_message(session: dict[str, Any]) -> str:
    """The one line for a closed session: its close reason and detail."""
    text = tr(
        "session %(id)s closed: %(reason)s",
        id=session["id"],
        reason=session.get("close_reason") or tr("closed"),
    )
    if session.get("detail"):
        text += f" ({session['detail']})"
    return text


def follow(
    api: ApiClient,
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


def say(text: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays the command's output)."""
    typer.echo(text, err=True)


def _report_state(session: dict[str, Any]) -> None:
    if session["state"] in _PROGRESS:
        say(
            tr("session %(id)s: %(state)s", id=session["id"], state=tr(_PROGRESS[session["state"]]))
        )


def _report_consent(session: dict[str, Any]) -> None:
    # Only the wait a person must act on; the rest would clutter a command's stderr.
    if session["state"] == "awaiting_consent":
        _report_state(session)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reused(session: dict[str, Any], reason: str | None) -> str:
    """The line that says which open session a command uses instead of opening one."""
    text = tr(
        "using your open session %(id)s on %(device)s (reason: %(reason)s)",
        id=session["id"],
        device=session["device_id"],
        reason=_short(str(session["reason"]).replace(chr(10), " "), 80),
    )
    if reason is not None:
        text += tr("; --new-session opens one with your --reason")
    return text


@contextlib.contextmanager
def operator_session(
    device_id: str,
    *,
    session_id: str | None,
    reason: str,
    services: list[str] | None = None,
    given_reason: str | None = None,
    new: bool = False,
) -> Iterator[tuple[ApiClient, dict[str, Any]]]:
    """The logged-in client and an active session to ``device_id``.

    The one place that ``exec``, ``connect`` and ``ssh`` get their session from:
    the one named with ``--session``; else the operator's own open session on
    the device (say, from ``fieldlink session open DEVICE --reason ...``), named
    on stderr; else (or with ``new``) a new one with ``reason``. A session
    opened here is kept alive by heartbeats while the command runs
    (:class:`server.client.lifetime.Heartbeats`) and closed on the way out
    (Ctrl-C, SIGTERM and SIGHUP included, :func:`server.client.lifetime.ended_by_signals`);
    one it found open is left open.

    Args:
        given_reason: The ``--reason`` the operator typed (``None``: the default).

    Raises:
        SessionEnded: It closed before it was active.
        FieldlinkError: ``session_id`` belongs to another device, or the API refused.
    """
    from server.client.lifetime import Heartbeats, ended_by_signals

    with ended_by_signals():
        api = ApiClient.from_credentials()
        heartbeats: Heartbeats | None = None
        try:
            session: dict[str, Any] | None = None
            if session_id is not None:
                session = api.session(session_id)
                if session["device_id"] != device_id:
                    msg = tr(
                        "session %(id)s is to %(device)s, not %(wanted)s",
                        id=session_id,
                        device=session["device_id"],
                        wanted=device_id,
                    )
                    raise FieldlinkError(msg)
            elif not new:
                session = api.my_open_session(device_id)
                if session is not None:
                    say(_reused(session, given_reason))
            opened = session is None
            if session is None:
                session = api.open_session(
                    device_id, reason=reason, services=services, keepalive=True
                )
                heartbeats = Heartbeats(api, session["id"])
                heartbeats.start()
            try:
                session = follow(api, session, _report_consent)
                if session["state"] == "closed":
                    raise SessionEnded(closed_message(session))
                yield api, session
            finally:
                if heartbeats is not None:
                    heartbeats.stop()
                if opened:
                    with contextlib.suppress(FieldlinkError):
                        api.close_session(session["id"])
        finally:
            api.close()


def own_errors_exit_255(function: Callable[[], int]) -> int:
    """Run ``function``; turn fieldlink's own errors into one line and exit status 255."""
    try:
        return function()
    except FieldlinkError as exc:
        say(tr("error: %(message)s", message=exc))
        return OWN_ERROR


# -- fieldlink session ... ------------------------------------------------------------------

session_app = typer.Typer(
    help=N_("Remote sessions: open, list, show, close, and download their recordings."),
    epilog=examples(
        ('fieldlink session open mfp-7 -r "toner"', "open; wait until active"),
        ("fieldlink ssh mfp-7", "a shell in that session"),
        ("fieldlink session close ses-…", "close it"),
    ),
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help=N_("print JSON"))]


class StateFilter(StrEnum):
    """What ``session list --state`` accepts."""

    OPEN = "open"
    REQUESTED = "requested"
    AWAITING_CONSENT = "awaiting_consent"
    CONNECTING = "connecting"
    ACTIVE = "active"
    CLOSED = "closed"


@session_app.command("open")
@help_text(
    N_(
        "Open a session to a device; print its id and follow it until it is active.\n"
        "\n"
        "Exits non-zero when the session closes instead (site denied, device\n"
        "unreachable...), with its close reason."
    )
)
def open_command(
    device: Annotated[str, typer.Argument(help=N_("the device id"))],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help=N_("why (shown to the site, audited)"))
    ],
    incident: Annotated[
        int | None, typer.Option("--incident", help=N_("the incident this session serves"))
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option("--service", "-s", help=N_("a service it may reach (repeat; default: all)")),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help=N_("follow it until active or closed"))
    ] = True,
    as_json: JsonOption = False,
) -> None:
    api = ApiClient.from_credentials()
    try:
        session = api.open_session(device, reason=reason, incident_id=incident, services=service)
        if not as_json:
            typer.echo(session["id"])
            progress = _PROGRESS.get(session["state"])
            say(
                tr(
                    "session %(id)s to %(device)s: %(state)s",
                    id=session["id"],
                    device=device,
                    state=tr(progress) if progress else "",
                )
            )
        if wait:
            from server.client.lifetime import ended_by_signals

            try:
                with ended_by_signals():
                    session = follow(api, session, None if as_json else _report_state)
            except KeyboardInterrupt:
                say(tr("interrupted: closing session %(id)s", id=session["id"]))
                with contextlib.suppress(FieldlinkError):
                    api.close_session(session["id"])
                raise
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(session, indent=2))
    if session["state"] == "closed":
        raise SessionEnded(closed_message(session))
    if wait and not as_json:
        say(tr("close it with: fieldlink session close %(id)s", id=session["id"]))


def _when(value: Any) -> str:
    return str(value or "-")[:19].replace("T", " ")


def _state_text(session: dict[str, Any]) -> str:
    if session["state"] == "closed" and session.get("close_reason"):
        return tr("closed (%(reason)s)", reason=session["close_reason"])
    state = str(session["state"])
    return tr(_STATES[state]) if state in _STATES else state


@session_app.command("list")
@help_text(N_("List sessions, newest first."))
def list_command(
    device: Annotated[
        str | None, typer.Option("--device", "-d", help=N_("only this device"))
    ] = None,
    state: Annotated[
        StateFilter | None, typer.Option("--state", help=N_("open (not closed) or one state"))
    ] = None,
    operator: Annotated[str | None, typer.Option(help=N_("only this operator's"))] = None,
    limit: Annotated[int, typer.Option(help=N_("at most this many"), min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    params: dict[str, Any] = {"limit": limit}
    wanted = state.value if state is not None else None
    for key, value in (("device_id", device), ("state", wanted), ("operator", operator)):
        if value is not None:
            params[key] = value
    api = ApiClient.from_credentials()
    try:
        page = api.sessions(**params)
    finally:
        api.close()
    echo_page(
        page,
        as_json=as_json,
        header=(
            tr("SESSION"),
            tr("DEVICE"),
            tr("OPERATOR"),
            tr("STATE"),
            tr("CREATED"),
            tr("REASON"),
        ),
        row=lambda s: (
            s["id"],
            s["device_id"],
            s["operator"],
            _state_text(s),
            _when(s.get("created_at")),
            _short(s["reason"].replace("\n", " "), 40),
        ),
        noun=tr("sessions"),
    )


def format_session(s: dict[str, Any]) -> str:
    """A session as ``field  value`` lines."""
    state = _state_text(s)
    if s["state"] == "closed" and s.get("detail"):
        state += f": {s['detail']}"
    services = ", ".join(s.get("services") or []) or tr("all the site allows")
    if s.get("services_used"):
        services += tr(" (used: %(services)s)", services=", ".join(s["services_used"]))
    recording = "-"
    if s.get("has_recording"):
        recording = tr(
            "sha256 %(sha256)s (fieldlink session recording %(id)s)",
            sha256=s.get("recording_sha256"),
            id=s["id"],
        )
    lines = [
        (tr("session"), s["id"]),
        (tr("device"), s["device_id"]),
        (tr("operator"), s["operator"]),
        (tr("state"), state),
        (tr("reason"), s["reason"]),
        (tr("incident"), str(s["incident_id"]) if s.get("incident_id") is not None else "-"),
        (tr("services"), services),
        (tr("origin"), s.get("origin") or "-"),
        (tr("created"), _when(s.get("created_at"))),
        (tr("started"), _when(s.get("started_at"))),
        (tr("ended"), _when(s.get("ended_at"))),
        (
            tr("bytes"),
            tr(
                "%(sent)s to the device, %(received)s from it",
                sent=s["bytes_to_device"],
                received=s["bytes_from_device"],
            ),
        ),
        (tr("recording"), recording),
    ]
    for refusal in s.get("refusals") or []:
        lines.append((tr("refused"), json.dumps(refusal, sort_keys=True)))
    width = max(10, *(len(name) for name, _value in lines))
    return "\n".join(f"{name:<{width}} {value}" for name, value in lines)


@session_app.command("show")
@help_text(N_("Show one session: state, close reason, services used, bytes, recording."))
def show_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help=N_("the session id"))],
    as_json: JsonOption = False,
) -> None:
    api = ApiClient.from_credentials()
    try:
        session = api.session(session_id)
    finally:
        api.close()
    typer.echo(json.dumps(session, indent=2) if as_json else format_session(session))


@session_app.command("close")
@help_text(N_("Close a session (the tunnel is down when this returns)."))
def close_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help=N_("the session id"))],
    as_json: JsonOption = False,
) -> None:
    api = ApiClient.from_credentials()
    try:
        session = api.close_session(session_id)
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(session, indent=2))
    else:
        typer.echo(tr("session %(id)s: %(state)s", id=session["id"], state=_state_text(session)))


@session_app.command("recording")
@help_text(N_("Download a closed session's shell recording (asciicast v2, for `asciinema play`)."))
def recording_command(
    session_id: Annotated[str, typer.Argument(metavar="ID", help=N_("the session id"))],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help=N_("write to this file (default: stdout)")),
    ] = None,
) -> None:
    api = ApiClient.from_credentials()
    try:
        body, headers = api.recording(session_id)
    finally:
        api.close()
    expected = headers.get("x-content-sha256")
    if expected and hashlib.sha256(body).hexdigest() != expected:
        msg = tr(
            "the recording of %(id)s does not match its SHA-256 (%(sha256)s)",
            id=session_id,
            sha256=expected,
        )
        raise FieldlinkError(msg)
    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(body)
    except OSError as exc:
        msg = tr("cannot write %(path)s: %(error)s", path=output, error=exc.strerror or exc)
        raise FieldlinkError(msg) from exc
    digest = expected or hashlib.sha256(body).hexdigest()
    say(
        tr(
            "%(path)s: %(size)s bytes, sha256 %(sha256)s",
            path=output,
            size=len(body),
            sha256=digest,
        )
    )


# -- fieldlink exec -------------------------------------------------------------------------


def command_line(words: list[str]) -> str:
    """The command text for the device's shell.

    One argument is a shell command line as written (``'ls | wc -l'``); several
    are quoted word by word, so ``sh -c 'exit 3'`` keeps its three words (where
    ``ssh`` would join them with spaces).
    """
    return words[0] if len(words) == 1 else shlex.join(words)


@help_text(
    N_(
        "Run one command on a device: its stdout and stderr here, its exit status as ours.\n"
        "\n"
        "Exits 255 on fieldlink's own errors (not logged in, unknown device, the\n"
        "session closed...)."
    )
)
def exec_command(
    device: Annotated[str, typer.Argument(help=N_("the device id"))],
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="-- CMD...",
            help=N_("the command: one argument is a shell line, several are quoted word by word"),
            show_default=False,
        ),
    ],
    reason: ReasonOption = None,
    session_id: SessionOption = None,
    new_session: NewSessionOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help=N_("seconds the command may run"), min=0.1, max=600)
    ] = 30.0,
) -> None:
    text = command_line(command)

    def run() -> int:
        with operator_session(
            device,
            session_id=session_id,
            reason=reason or _short(f"fieldlink exec: {text}"),
            given_reason=reason,
            new=new_session,
        ) as (api, session):
            result = api.exec(session["id"], text, timeout)
        sys.stdout.write(result["stdout"])
        sys.stdout.flush()
        sys.stderr.write(result["stderr"])
        sys.stderr.flush()
        status = result["exit_status"]
        if status is None or not 0 <= status <= 255:
            say("error: the command ended without an exit status (killed by a signal?)")
            return OWN_ERROR
        return int(status)

    raise typer.Exit(own_errors_exit_255(run))
