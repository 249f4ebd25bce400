"""``fieldlink session|exec|connect|ssh`` against the real app served on a loopback port.

The commands run in process through the real command tree
(:func:`tests.fixtures.cli.fieldlink`) with a credentials file, so what is
checked is what an operator sees: one line on stderr, the exit
status, the table. Sessions that need a live agent are in
``tests/integration/test_session_cli.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import Engine
from sqlmodel import Session

from provisioning.ca import CertificateAuthority
from server import crud
from server.client.api import ApiClient
from server.client.sessions import command_line
from server.config import ServerSettings
from server.main import create_app
from server.models import Device, DeviceCreate, RemoteSession
from shared.ids import utcnow
from tests.fixtures.cli import Done
from tests.fixtures.cli import fieldlink as run_fieldlink
from tests.fixtures.ports import free_port

PASSWORD = "correct horse battery"


def host_key() -> str:
    """A device's public host key, as enrollment pins it."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@dataclass
class LiveServer:
    url: str
    engine: Engine
    directory: Path

    def token(self, username: str, role: str = "operator") -> str:
        with Session(self.engine) as db:
            crud.create_user(db, username=username, role=role, password=PASSWORD)
        answer = httpx.post(
            f"{self.url}/api/v1/auth/token",
            data={"username": username, "password": PASSWORD},
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def credentials(self, token: str, server: str | None = None) -> Path:
        path = self.directory / f"credentials-{token[-8:]}.json"
        path.write_text(json.dumps({"server": server or self.url, "token": token}))
        path.chmod(0o600)
        return path


@pytest.fixture
def live(settings: ServerSettings, tmp_path: Path) -> Iterator[LiveServer]:
    """The app (with a CA, so sessions are on) served by uvicorn in a thread; no broker."""
    CertificateAuthority.init(settings.state_dir)
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app.state.engine, tmp_path)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def operator(live: LiveServer) -> Path:
    """The credentials file of operator ``op1``."""
    return live.credentials(live.token("op1"))


def fieldlink(credentials: Path | None, *args: str) -> Done:
    """``fieldlink ARGS`` in process, logged in with ``credentials`` (or not at all)."""
    path = str(credentials or "/nonexistent/credentials.json")
    return run_fieldlink(*args, env={"FIELDLINK_CREDENTIALS": path})


def one_error_line(done: Done) -> str:
    """The single ``error: ...`` line a failed command printed (no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def add_device(engine: Engine, device_id: str, *, host_key: str | None = None) -> None:
    with Session(engine) as db:
        crud.create_device(
            db,
            data=DeviceCreate(
                id=device_id, serial=device_id.upper(), model="T1", type="mfp", customer="Acme"
            ),
        )
        if host_key is not None:
            device = db.get(Device, device_id)
            assert device is not None
            device.ssh_host_key = host_key
            db.add(device)
            db.commit()


def add_session(
    engine: Engine,
    session_id: str,
    device_id: str,
    *,
    operator: str = "op1",
    state: str = "closed",
    close_reason: str | None = "operator",
    detail: str | None = None,
    recording: Path | None = None,
) -> None:
    """A session row as the manager leaves it (the tunnel is the integration tests' part)."""
    now = utcnow()
    row = RemoteSession(
        id=session_id,
        device_id=device_id,
        operator=operator,
        reason="toner low, customer on the phone",
        state=state,
        close_reason=close_reason if state == "closed" else None,
        detail=detail,
        created_at=now,
        expires_at=now + timedelta(minutes=2),
        ended_at=now if state == "closed" else None,
        services_used=["exec"],
        bytes_to_device=120,
        bytes_from_device=4567,
    )
    if recording is not None:
        row.recording_path = str(recording)
        row.recording_sha256 = hashlib.sha256(recording.read_bytes()).hexdigest()
        row.recording_bytes = recording.stat().st_size
    with Session(engine) as db:
        db.add(row)
        db.commit()


# -- without a server -----------------------------------------------------------------------


def test_one_argument_is_a_shell_line_several_are_words() -> None:
    assert command_line(["ls -l /tmp | wc -l"]) == "ls -l /tmp | wc -l"
    assert command_line(["sh", "-c", "exit 3"]) == "sh -c 'exit 3'"
    assert command_line(["echo", "it's"]) == "echo 'it'\"'\"'s'"


def test_socket_urls_follow_the_server_scheme() -> None:
    plain = ApiClient("http://center:8080/", "t")
    assert plain.ws_url("/sessions/s1/terminal", cols=80, rows=24) == (
        "ws://center:8080/api/v1/sessions/s1/terminal?cols=80&rows=24"
    )
    assert plain.auth_headers == {"Authorization": "Bearer t"}
    secure = ApiClient("https://center.example.com", "t")
    assert secure.ws_url("/sessions/s1/forward/web") == (
        "wss://center.example.com/api/v1/sessions/s1/forward/web"
    )
    plain.close()
    secure.close()


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["session", "list"], 4),
        (["session", "open", "mfp-1", "--reason", "x"], 4),
        (["exec", "mfp-1", "--", "uptime"], 255),
        (["connect", "mfp-1", "web"], 4),
        (["ssh", "mfp-1"], 255),
    ],
)
def test_not_logged_in_is_one_line(args: list[str], status: int) -> None:
    done = fieldlink(None, *args)
    assert done.returncode == status
    assert "not logged in: run `fieldlink login --server URL` first" in one_error_line(done)


def test_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"server": "http://127.0.0.1:1", "token": "t"}))
    for args, status in (
        (["session", "show", "ses-1"], 6),
        (["exec", "mfp-1", "--", "true"], 255),
        (["ssh", "mfp-1"], 255),
    ):
        done = fieldlink(credentials, *args)
        assert done.returncode == status, done.stderr
        assert one_error_line(done).startswith("error: cannot reach http://127.0.0.1:1")


def test_usage_mistakes_exit_2_and_name_what_is_missing() -> None:
    no_reason = fieldlink(None, "session", "open", "mfp-1")
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    no_command = fieldlink(None, "exec", "mfp-1")
    assert no_command.returncode == 2
    assert "CMD" in no_command.stderr
    bad_state = fieldlink(None, "session", "list", "--state", "sleeping")
    assert bad_state.returncode == 2
    assert "sleeping" in bad_state.stderr
    bad_port = fieldlink(None, "connect", "mfp-1", "web", "--port", "70000")
    assert bad_port.returncode == 2
    for command in (["session", "--help"], ["exec", "--help"], ["connect", "--help"]):
        assert fieldlink(None, *command).returncode == 0


# -- against the app ------------------------------------------------------------------------


def test_an_unknown_device_is_404_in_one_line(live: LiveServer, operator: Path) -> None:
    for args, status in (
        (["session", "open", "nope-1", "--reason", "check"], 3),
        (["exec", "nope-1", "--", "uptime"], 255),
        (["connect", "nope-1", "web"], 3),
        (["ssh", "nope-1"], 255),
    ):
        done = fieldlink(operator, *args)
        assert done.returncode == status, done.stderr
        assert one_error_line(done) == "error: 404: no device 'nope-1'"
        assert done.stdout == ""


def test_a_device_that_cannot_hold_a_session_is_409_in_one_line(
    live: LiveServer, operator: Path
) -> None:
    add_device(live.engine, "mfp-nokey")
    done = fieldlink(operator, "session", "open", "mfp-nokey", "--reason", "jam")
    assert done.returncode == 5  # conflict
    assert one_error_line(done) == (
        "error: 409: device mfp-nokey has no pinned SSH host key: enroll it again"
    )


def test_a_broker_that_is_down_fails_the_open_and_the_session_is_recorded_closed(
    live: LiveServer, operator: Path
) -> None:
    add_device(live.engine, "mfp-far", host_key=host_key())
    done = fieldlink(operator, "session", "open", "mfp-far", "--reason", "jam")
    assert done.returncode == 6  # unavailable
    assert one_error_line(done) == (
        "error: 503: the command publisher is not connected to the broker"
    )
    listed = fieldlink(operator, "session", "list", "--device", "mfp-far", "--json")
    [session] = json.loads(listed.stdout)["items"]
    assert (session["state"], session["close_reason"]) == ("closed", "agent_unreachable")
    assert session["origin"] == "cli"


def test_list_show_and_close(live: LiveServer, operator: Path) -> None:
    add_device(live.engine, "mfp-7")
    add_session(live.engine, "ses-done", "mfp-7", detail="closed by op1")
    add_session(
        live.engine,
        "ses-denied",
        "mfp-7",
        close_reason="site_denied",
        detail="the site did not approve: denied",
    )

    table = fieldlink(operator, "session", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "DEVICE", "OPERATOR", "STATE", "CREATED", "REASON"]
    assert any(line.startswith("ses-denied") and "closed (site_denied)" in line for line in lines)
    assert lines[-1] == "2 of 2 sessions"
    assert fieldlink(operator, "session", "list", "--state", "open").stdout.splitlines()[-1] == (
        "0 of 0 sessions"
    )
    page = json.loads(fieldlink(operator, "session", "list", "--json", "--device", "mfp-7").stdout)
    assert {s["id"] for s in page["items"]} == {"ses-done", "ses-denied"}

    shown = fieldlink(operator, "session", "show", "ses-denied")
    assert shown.returncode == 0, shown.stderr
    assert "state      closed (site_denied): the site did not approve: denied" in shown.stdout
    assert "bytes      120 to the device, 4567 from it" in shown.stdout
    assert json.loads(fieldlink(operator, "session", "show", "ses-done", "--json").stdout)[
        "close_reason"
    ] == ("operator")

    closed = fieldlink(operator, "session", "close", "ses-done")
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.strip() == "session ses-done: closed (operator)"

    missing = fieldlink(operator, "session", "show", "ses-nope")
    assert missing.returncode == 3
    assert one_error_line(missing) == "error: 404: no session 'ses-nope'"
    # An id cannot reach another route.
    sneaky = fieldlink(operator, "session", "show", "../devices")
    assert sneaky.returncode == 3
    assert one_error_line(sneaky).startswith("error: 404: ")


def test_another_operators_session_is_refused(live: LiveServer, operator: Path) -> None:
    add_device(live.engine, "mfp-8")
    add_session(live.engine, "ses-theirs", "mfp-8", operator="someone-else")
    done = fieldlink(operator, "session", "show", "ses-theirs")
    assert done.returncode == 4
    assert one_error_line(done) == "error: 403: this session belongs to another operator"


def test_recording_is_downloaded_byte_for_byte(
    live: LiveServer, operator: Path, tmp_path: Path
) -> None:
    cast = tmp_path / "ses-rec.cast"
    cast.write_bytes(
        b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "$ echo h\\u00e9\\r\\n"]\n'
    )
    add_device(live.engine, "mfp-9")
    add_session(live.engine, "ses-rec", "mfp-9", recording=cast)
    add_session(live.engine, "ses-norec", "mfp-9")

    out = tmp_path / "out.cast"
    done = fieldlink(operator, "session", "recording", "ses-rec", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == cast.read_bytes()
    assert hashlib.sha256(cast.read_bytes()).hexdigest() in done.stderr
    to_stdout = fieldlink(operator, "session", "recording", "ses-rec")
    assert to_stdout.stdout_bytes == cast.read_bytes()

    none = fieldlink(operator, "session", "recording", "ses-norec")
    assert none.returncode == 3
    assert one_error_line(none) == "error: 404: this session has no shell recording"


def test_commands_on_a_closed_session_say_why_it_closed(live: LiveServer, operator: Path) -> None:
    add_device(live.engine, "mfp-10")
    add_session(
        live.engine,
        "ses-gone",
        "mfp-10",
        close_reason="idle_timeout",
        detail="no traffic for 900 s",
    )
    expected = "error: session ses-gone closed: idle_timeout (no traffic for 900 s)"
    for args, status in (
        (["exec", "mfp-10", "--session", "ses-gone", "--", "uptime"], 255),
        (["connect", "mfp-10", "web", "--session", "ses-gone"], 1),
        (["ssh", "mfp-10", "--session", "ses-gone"], 255),
    ):
        done = fieldlink(operator, *args)
        assert done.returncode == status, done.stderr
        assert one_error_line(done) == expected
    # The session is not closed again by the command that did not open it.
    wrong_device = fieldlink(operator, "exec", "mfp-other", "--session", "ses-gone", "--", "id")
    assert wrong_device.returncode == 255
    assert one_error_line(wrong_device) == ("error: session ses-gone is to mfp-10, not mfp-other")


# -- reusing the operator's open session, and its heartbeats --------------------------------


def _row(engine: Engine, session_id: str) -> RemoteSession:
    with Session(engine) as db:
        row = db.get(RemoteSession, session_id)
        assert row is not None
        return row


def test_exec_uses_the_operators_open_session_on_the_device_not_anothers(
    live: LiveServer, operator: Path
) -> None:
    add_device(live.engine, "mfp-r")
    add_session(live.engine, "ses-theirs", "mfp-r", operator="op2", state="active")
    add_session(live.engine, "ses-old", "mfp-r", state="closed")
    add_session(live.engine, "ses-mine", "mfp-r", state="active")
    done = fieldlink(operator, "exec", "mfp-r", "--", "true")
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        "using your open session ses-mine on mfp-r (reason: toner low, customer on the phone)"
    )
    # (No agent holds it here, so the command itself fails: that is the integration tests'.)
    assert done.returncode == 255
    assert _row(live.engine, "ses-mine").state == "active"  # not closed: it did not open it
    listed = fieldlink(operator, "session", "list", "--device", "mfp-r", "--json")
    assert json.loads(listed.stdout)["count"] == 3  # nothing new was opened

    # --new-session asks for one of its own (this device cannot hold one: 409, one line).
    fresh = fieldlink(operator, "exec", "mfp-r", "--new-session", "--", "true")
    assert fresh.returncode == 255
    assert one_error_line(fresh) == (
        "error: 409: device mfp-r has no pinned SSH host key: enroll it again"
    )


def test_heartbeats_keep_only_ones_own_open_session_alive(live: LiveServer, operator: Path) -> None:
    add_device(live.engine, "mfp-h")
    add_session(live.engine, "ses-live", "mfp-h", state="active")
    add_session(live.engine, "ses-done", "mfp-h", state="closed")
    add_session(live.engine, "ses-other", "mfp-h", operator="op2", state="active")
    token = json.loads(operator.read_text())["token"]
    client = ApiClient(live.url, token)
    try:
        answer = client.heartbeat("ses-live")
        assert answer["open"] is True
        assert answer["timeout_s"] == 90.0
        assert _row(live.engine, "ses-live").operator_seen_at is not None
        assert client.heartbeat("ses-done")["open"] is False
        assert _row(live.engine, "ses-done").operator_seen_at is None
    finally:
        client.close()
    refused = httpx.post(
        f"{live.url}/api/v1/sessions/ses-other/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert refused.status_code == 403
    assert _row(live.engine, "ses-other").operator_seen_at is None
    missing = httpx.post(
        f"{live.url}/api/v1/sessions/ses-nope/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert missing.status_code == 404
