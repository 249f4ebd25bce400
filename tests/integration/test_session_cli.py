"""The operator's session commands end to end: ``fieldlink exec|connect|ssh|session``.

Real parts throughout: `fieldlink server run` with its CA and a TLS Mosquitto
(`secure_center`), a device enrolled with `fieldlink agent enroll` and running
`fieldlink agent run` with a ``web`` service (a small HTTP server started here)
and ``vnc`` configured but not allowed by the site, and the commands run as an
operator would run them, after `fieldlink login`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.center import add_operator, enrolled_agent, secure_center
from tests.fixtures.processes import (
    ServerProcess,
    run_fieldlink,
    site_command,
    start_fieldlink,
    wait_until,
)
from tests.fixtures.web_panel import PAGE, web_panel_server

pytestmark = pytest.mark.integration

#: A large download through `fieldlink connect`, checked by its SHA-256.
BIG = os.urandom(8 * 1024 * 1024)
#: The center closes a session whose client stopped beating after this long (small here,
#: so that the test of a killed client does not wait the default 90 s).
HEARTBEAT_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def web_panel() -> Iterator[int]:
    """The device's own web panel, serving a large download at /big over HTTP/1.1."""
    with web_panel_server({"/big": BIG}, http11=True) as port:
        yield port


class Operator:
    """An operator logged in with `fieldlink login` (own credentials file)."""

    def __init__(self, server: ServerProcess, device_id: str, directory: Path) -> None:
        self.server = server
        self.device_id = device_id
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
        self.env["FIELDLINK_CREDENTIALS"] = str(directory / "credentials.json")
        self.env["PYTHONUNBUFFERED"] = "1"

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_fieldlink(self.env, *args, stdin=stdin)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_fieldlink(self.env, *args)

    def sessions(self) -> list[dict[str, Any]]:
        done = self.run("session", "list", "--device", self.device_id, "--json")
        assert done.returncode == 0, done.stderr
        items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        return items

    def open_sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.sessions() if s["state"] != "closed"]


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory, web_panel: int) -> Iterator[Operator]:
    tmp_path = tmp_path_factory.mktemp("session-cli")
    with (
        secure_center(
            tmp_path, f"sqlite:///{tmp_path / 'fieldlink.db'}",
            operator_heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        ) as (server, _broker),
        enrolled_agent(
            server, tmp_path, "CLI-1",
            services={"web": f"127.0.0.1:{web_panel}", "vnc": "127.0.0.1:1"},
            policy={"services": ["web"], "consent": "none", "idle_timeout_s": 600},
        ) as (device_id, _agent, _device_dir),
    ):  # fmt: skip
        add_operator(server)
        operator = Operator(server, device_id, tmp_path)
        login = operator.run("login", "--server", server.url, "--user", "olga",
                             stdin="pw-12345678\n")  # fmt: skip
        assert login.returncode == 0, login.stderr
        yield operator


def test_exec_prints_the_output_and_exits_with_the_commands_status(operator: Operator) -> None:
    hi = operator.run("exec", operator.device_id, "--", "echo", "hi")
    assert hi.returncode == 0, hi.stderr
    assert hi.stdout == "hi\n"
    assert hi.stderr == ""

    three = operator.run("exec", operator.device_id, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert three.returncode == 3
    assert three.stdout == ""
    assert three.stderr == "oops\n"

    # Each exec opened a session of its own, with a reason naming the command, and closed it.
    mine = [s for s in operator.sessions() if s["reason"].startswith("fieldlink exec: ")]
    assert len(mine) >= 2
    assert all(s["state"] == "closed" and s["close_reason"] == "operator" for s in mine)
    assert all(s["origin"] == "cli" and s["services_used"] == ["exec"] for s in mine)
    assert operator.open_sessions() == []


def test_session_open_then_exec_in_it_then_close(operator: Operator) -> None:
    opened = operator.run("session", "open", operator.device_id, "--reason", "paper jam")
    assert opened.returncode == 0, opened.stderr
    sid = opened.stdout.strip()
    assert sid.startswith("ses-")
    assert f"session {sid}: active" in opened.stderr

    ran = operator.run("exec", operator.device_id, "--session", sid, "--", "echo $((6*7))")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "42\n"
    shown = operator.run("session", "show", sid, "--json")
    assert json.loads(shown.stdout)["state"] == "active"  # not closed by exec: it did not open it

    closed = operator.run("session", "close", sid)
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.strip() == f"session {sid}: closed (operator)"
    again = operator.run("exec", operator.device_id, "--session", sid, "--", "true")
    assert again.returncode == 255
    assert again.stderr.strip().startswith(f"error: session {sid} closed: operator")


def _forwarding(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("forwarding 127.0.0.1:"), line + (process.stderr.read() or "")  # type: ignore[union-attr]
    local, _arrow, remote = line.split()[1:]
    assert remote.endswith(":web")
    return int(local.rsplit(":", 1)[1])


def test_connect_forwards_a_local_port_to_the_web_service(operator: Operator) -> None:
    process = operator.start("connect", operator.device_id, "web", "--port", "0")
    try:
        port = _forwarding(process)
        assert len(operator.open_sessions()) == 1
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            page = http.get("/")
            assert page.status_code == 200
            assert page.content == PAGE
            # Several connections, one after another and at once, each through its own socket.
            big = http.get("/big")
            assert hashlib.sha256(big.content).digest() == hashlib.sha256(BIG).digest()
        results: list[bytes] = []

        def fetch() -> None:
            results.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=60).content)

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [PAGE] * 4
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    # Ctrl-C closed the session it had opened.
    assert operator.open_sessions() == []
    used = operator.sessions()[0]
    assert used["close_reason"] == "operator"
    assert "forward:web" in used["services_used"]
    assert used["bytes_from_device"] > len(BIG)


def test_connect_to_a_service_the_site_does_not_allow_fails_in_one_line(
    operator: Operator,
) -> None:
    refused = operator.run("connect", operator.device_id, "vnc")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: session ses-")
    assert "site_denied" in lines[0]
    assert "not_allowed" in lines[0]

    # In a session opened for everything the site allows, the forward itself is refused.
    opened = operator.run("session", "open", operator.device_id, "--reason", "panel")
    sid = opened.stdout.strip()
    try:
        for service in ("vnc", "printer"):
            done = operator.run("connect", operator.device_id, service, "--session", sid)
            assert done.returncode == 1
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, done.stderr
            assert lines[0].startswith(f"error: the forward to {service} refused: ")
            assert service in lines[0].split("refused: ", 1)[1]
    finally:
        operator.run("session", "close", sid)


def test_ssh_with_piped_stdin_runs_a_shell_and_is_recorded(
    operator: Operator, tmp_path: Path
) -> None:
    done = operator.run("ssh", operator.device_id, stdin="echo hello-$((40+2)); exit\n")
    assert done.returncode == 0, done.stderr
    assert "hello-42" in done.stdout
    assert done.stderr == ""

    failing = operator.run("ssh", operator.device_id, stdin="exit 5\n")
    assert failing.returncode == 5, failing.stderr

    # Without an exit in the input, the end of stdin ends the shell.
    no_exit = operator.run("ssh", operator.device_id, stdin="echo bye-$((1+1))")
    assert no_exit.returncode == 0, no_exit.stderr
    assert "bye-2" in no_exit.stdout

    shells = [s for s in operator.sessions() if s["reason"].startswith("fieldlink ssh")]
    assert len(shells) == 3
    assert all(s["state"] == "closed" and "shell" in s["services_used"] for s in shells)
    first = shells[-1]  # newest first
    wait_until(
        lambda: json.loads(operator.run("session", "show", first["id"], "--json").stdout)[
            "has_recording"
        ],
        timeout=10,
    )
    cast = tmp_path / "shell.cast"
    got = operator.run("session", "recording", first["id"], "-o", str(cast))
    assert got.returncode == 0, got.stderr
    lines = cast.read_text().splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert "hello-42" in "".join(json.loads(line)[2] for line in lines[1:])


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not in the terminal's output: {bytes(seen[-400:])!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {needle!r}: {bytes(seen[-400:])!r}"
            seen += chunk


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_ssh_in_a_terminal_is_raw_follows_resizes_and_restores_the_terminal(
    operator: Operator,
) -> None:
    controller, terminal = pty.openpty()
    _set_size(terminal, 30, 100)
    before = termios.tcgetattr(terminal)
    process = subprocess.Popen(
        [sys.executable, "-m", "shared", "ssh", operator.device_id],
        stdin=terminal, stdout=terminal, stderr=terminal, env=operator.env,
        start_new_session=True,
    )  # fmt: skip
    seen = bytearray()
    try:
        # Once the session is active fieldlink puts the terminal in raw mode (no local echo).
        wait_until(lambda: not termios.tcgetattr(terminal)[3] & termios.ECHO, timeout=30)
        os.write(controller, b"stty size; echo shown-$((1+1))\r")
        _read_until(controller, b"shown-2\r\n", seen)
        assert b"30 100" in seen
        _set_size(terminal, 40, 120)
        process.send_signal(signal.SIGWINCH)
        # Raw mode: Ctrl-C goes to the device (interrupting the sleep), not to fieldlink.
        os.write(controller, b"sleep 30\r")
        _read_until(controller, b"sleep 30", seen)
        time.sleep(0.5)
        os.write(controller, b"\x03")
        os.write(controller, b"stty size; exit 7\r")
        _read_until(controller, b"40 120", seen)
        assert process.wait(timeout=30) == 7
        assert termios.tcgetattr(terminal) == before
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
        os.close(terminal)


class SiteDevice:
    """A second device whose site approves each session (``consent = "required"``)."""

    def __init__(self, device_id: str, config: Path, state_dir: Path) -> None:
        self.device_id = device_id
        self.config = config
        self.state_dir = state_dir

    def site(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``fieldlink agent ...`` on the device (the site's panel)."""
        return site_command(self.config, self.state_dir, *args)


@pytest.fixture(scope="module")
def site_device(
    operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SiteDevice]:
    tmp_path = tmp_path_factory.mktemp("site")
    server = operator.server
    with enrolled_agent(
        server, tmp_path, "CT-9", model="Aquilion", device_type="imaging",
        customer="St. Mary", profile="imaging", fast_reconnect=False,
        policy={"consent": "required", "approval_timeout_s": 60},
    ) as (device_id, agent, _device_dir):  # fmt: skip
        yield SiteDevice(device_id, agent.config, tmp_path / "agent-state")


def _stderr_lines(process: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Lines of a running command's stderr, up to the one containing ``needle``."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not lines or needle not in lines[-1]:
        assert time.monotonic() < deadline, f"{needle!r} not in {lines}"
        line = process.stderr.readline()
        assert line, f"stderr ended before {needle!r}: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def _awaiting(site: SiteDevice) -> str:
    """The id of the one session the site is asked to approve."""
    wait_until(lambda: "ses-" in site.site("sessions").stdout, timeout=30)
    return next(word for word in site.site("sessions").stdout.split() if word.startswith("ses-"))


def test_session_open_waits_for_the_sites_approval(
    operator: Operator, site_device: SiteDevice
) -> None:
    process = operator.start("session", "open", site_device.device_id, "--reason", "CT check")
    try:
        lines = _stderr_lines(process, "awaiting the site's approval")
        sid = _awaiting(site_device)
        assert lines[-1] == f"session {sid}: awaiting the site's approval"
        assert site_device.site("approve", sid).returncode == 0
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.strip() == sid
    assert f"session {sid}: active" in err

    ran = operator.run("exec", site_device.device_id, "--session", sid, "--", "echo approved")
    assert (ran.returncode, ran.stdout) == (0, "approved\n"), ran.stderr

    # The site ends it: the next command in it says so in one line.
    assert site_device.site("end", sid).returncode == 0
    wait_until(
        lambda: (
            json.loads(operator.run("session", "show", sid, "--json").stdout)["state"] == "closed"
        ),
        timeout=10,
    )
    late = operator.run("ssh", site_device.device_id, "--session", sid, stdin="echo x\n")
    assert late.returncode == 255
    assert late.stderr.strip().startswith(f"error: session {sid} closed: site_ended")


def test_connect_stops_in_one_line_when_its_session_is_closed(operator: Operator) -> None:
    process = operator.start("connect", operator.device_id, "web")
    try:
        _forwarding(process)
        [session] = operator.open_sessions()
        closed = operator.run("session", "close", session["id"])
        assert closed.returncode == 0, closed.stderr
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1
    assert err.strip() == f"error: session {session['id']} closed: operator (closed by olga)"


def test_a_session_the_site_denies_fails_in_one_line(
    operator: Operator, site_device: SiteDevice
) -> None:
    process = operator.start("exec", site_device.device_id, "--", "uptime")
    try:
        lines = _stderr_lines(process, "awaiting the site's approval")
        sid = _awaiting(site_device)
        assert lines == [f"session {sid}: awaiting the site's approval"]
        assert site_device.site("deny", sid).returncode == 0
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 255
    assert out == ""
    assert err.strip().splitlines()[-1].startswith(f"error: session {sid} closed: site_denied (")


@pytest.mark.parametrize(
    "args",
    [
        ["exec", "--", "sleep 60"],
        ["ssh"],
        ["connect", "web"],
    ],
    ids=["exec", "ssh", "connect"],
)
def test_sigterm_closes_the_session_the_command_opened(operator: Operator, args: list[str]) -> None:
    command, *rest = args
    process = subprocess.Popen(
        [sys.executable, "-m", "shared", command, operator.device_id, *rest],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=operator.env,
    )  # fmt: skip
    try:
        wait_until(lambda: [s["state"] for s in operator.open_sessions()] == ["active"], timeout=30)
        time.sleep(0.5)  # into the command, the shell or the listener
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err, err
    assert process.returncode in (0, 130), err
    assert operator.open_sessions() == []
    assert operator.sessions()[0]["close_reason"] == "operator"


def test_ssh_after_session_open_uses_that_session_and_leaves_it_open(operator: Operator) -> None:
    opened = operator.run("session", "open", operator.device_id, "--reason", "paper jam, call 77")
    assert opened.returncode == 0, opened.stderr
    sid = opened.stdout.strip()
    try:
        done = operator.run("ssh", operator.device_id, stdin="echo in-$((6*7)); exit\n")
        assert done.returncode == 0, done.stderr
        assert "in-42" in done.stdout
        assert done.stderr.splitlines() == [
            f"using your open session {sid} on {operator.device_id} (reason: paper jam, call 77)"
        ]
        ran = operator.run("exec", operator.device_id, "--reason", "other", "--", "echo ok")
        assert (ran.returncode, ran.stdout) == (0, "ok\n"), ran.stderr
        assert f"using your open session {sid}" in ran.stderr
        assert "--new-session" in ran.stderr  # its own --reason was not used: it says how
        # One session, the operator's, still open with its reason; nothing else was opened.
        [only] = operator.open_sessions()
        assert (only["id"], only["reason"], only["state"]) == (sid, "paper jam, call 77", "active")
        # --new-session opens (and closes) one of its own.
        fresh = operator.run("exec", operator.device_id, "--new-session", "--", "true")
        assert fresh.returncode == 0, fresh.stderr
        assert "using your open session" not in fresh.stderr
        assert [s["id"] for s in operator.open_sessions()] == [sid]
    finally:
        operator.run("session", "close", sid)
    assert operator.open_sessions() == []
    shown = json.loads(operator.run("session", "show", sid, "--json").stdout)
    assert {"shell", "exec"} <= set(shown["services_used"])


@pytest.mark.parametrize(
    "args",
    [["exec", "--", "sleep 60"], ["ssh"], ["connect", "web"]],
    ids=["exec", "ssh", "connect"],
)
def test_sigterm_in_the_background_of_a_script_closes_the_session(
    operator: Operator, args: list[str]
) -> None:
    """``cmd &`` in a script: the shell ignores SIGINT for it; SIGTERM still ends it cleanly."""
    command, *rest = args
    script = 'exec 3<&0; "$@" <&3 & echo "$!"; wait "$!"'
    process = subprocess.Popen(
        ["sh", "-c", script, "sh", sys.executable, "-m", "shared", command, operator.device_id,
         *rest],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=operator.env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        pid = int(process.stdout.readline())
        wait_until(lambda: [s["state"] for s in operator.open_sessions()] == ["active"], timeout=30)
        [session] = operator.open_sessions()
        time.sleep(0.5)  # into the command, the shell or the listener
        os.kill(pid, signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err, err
    assert process.returncode in (0, 130), err
    assert operator.open_sessions() == []
    closed = json.loads(operator.run("session", "show", session["id"], "--json").stdout)
    assert closed["close_reason"] == "operator"


@pytest.mark.parametrize("command", [["connect", "web"], ["ssh"]], ids=["connect", "ssh"])
def test_a_killed_client_s_session_is_closed_by_the_server(
    operator: Operator, command: list[str]
) -> None:
    """SIGKILL leaves no chance to close: the heartbeats stop, and the server closes it."""
    name, *rest = command
    process = subprocess.Popen(
        [sys.executable, "-m", "shared", name, operator.device_id, *rest],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=operator.env,
    )  # fmt: skip
    try:
        wait_until(lambda: [s["state"] for s in operator.open_sessions()] == ["active"], timeout=30)
        [session] = operator.open_sessions()
        # Alive and beating while the client runs.
        seen = json.loads(operator.run("session", "show", session["id"], "--json").stdout)
        assert seen["operator_seen_at"] is not None
        wait_until(
            lambda: (
                json.loads(operator.run("session", "show", session["id"], "--json").stdout)[
                    "operator_seen_at"
                ]
                != seen["operator_seen_at"]
            ),
            timeout=30,
        )
        assert operator.open_sessions() != []
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    wait_until(lambda: operator.open_sessions() == [], timeout=60)
    closed = json.loads(operator.run("session", "show", session["id"], "--json").stdout)
    assert closed["close_reason"] == "operator_gone"
    assert "no heartbeat from olga's client" in closed["detail"]
    # Audited as every close is: one session.close entry with the reason.
    audit = operator.server.cli("audit", "list", "--action", "session.close", "--limit", "500")
    assert audit.returncode == 0, audit.stderr
    entries = [line for line in audit.stdout.splitlines() if session["id"] in line]
    assert len(entries) == 1, audit.stdout
    assert '"close_reason":"operator_gone"' in entries[0]
