"""The privileged shell helper with real accounts: who may ask, what runs, what is left.

The helper runs as root (``fieldlink agent shell-helper``); its clients run as a
real unprivileged agent account, as a shell account that is not the agent, and
as root. The shells it starts must run as the maintenance account, see every
process on the machine, and leave nothing behind when the session ends or the
agent dies by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.accounts import (
    AGENT_USER,
    SHELL_USER,
    ShellHelperProcess,
    as_user,
    can_make_accounts,
    privsep_accounts,
)
from tests.fixtures.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not can_make_accounts(), reason="needs root and useradd"),
]

CHECKOUT = Path(__file__).resolve().parents[2]

#: A client of the helper: runs one request, prints what the shell wrote, then
#: holds the session open until stdin closes (or the process is killed).
CLIENT = r"""
import asyncio, json, os, sys
from pathlib import Path
from agent.remote.shellrequest import ShellHelperError, ShellRequest, start_session

spec = json.loads(sys.argv[2])

class Verbatim(ShellRequest):
    # Sends the test's request as it is (what a compromised agent could send).
    def encode(self) -> bytes:
        body = {"v": 1, "session_id": "ses-test", **spec}
        body.pop("input", None)
        return json.dumps(body).encode() + b"\n"

async def main() -> None:
    try:
        request = Verbatim("ses-test", pty=spec.get("pty", False))
        started = await start_session(Path(sys.argv[1]), request)
    except ShellHelperError as exc:
        print("REFUSED", exc, flush=True)
        return
    if spec.get("pty"):
        (master,) = started.fds
        os.write(master, spec.get("input", "").encode())
        out = b""
        while b"END-OF-TEST" not in out:
            out += os.read(master, 65536)
        print(out.decode(errors="replace"), flush=True)
    else:
        stdin, stdout, _ = started.fds
        os.close(stdin)
        data = b""
        while b"READY" not in data and (chunk := os.read(stdout, 65536)):
            data += chunk
        print(data.decode(), flush=True)
        if b"READY" not in data:
            print("EXIT", await started.wait(), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # holds the session until told
    started.close()

asyncio.run(main())
"""


@dataclass
class Helper:
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path
    directory: Path

    def client(self, spec: str, user: str = AGENT_USER) -> subprocess.Popen[str]:
        """A helper client running as ``user`` (its stdout is a pipe)."""
        return subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(self.socket), spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=CHECKOUT,
            env={"PYTHONPATH": str(CHECKOUT), "PATH": os.environ["PATH"]},
            **as_user(user),  # type: ignore[arg-type]
        )

    def run(self, spec: str, user: str = AGENT_USER) -> str:
        client = self.client(spec, user)
        out, err = client.communicate("", timeout=30)
        assert client.returncode == 0, err
        return out


@pytest.fixture(scope="module")
def accounts() -> Iterator[None]:
    with privsep_accounts(CHECKOUT):
        yield


@pytest.fixture(scope="module")
def helper(accounts: None) -> Iterator[Helper]:
    # Not pytest's tmp_path: the agent's account cannot enter root's 0700 folders.
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-helper-"))
    directory.chmod(0o755)
    config = directory / "agent.toml"
    config.write_text(
        f'[agent]\ndevice_id = "dev-helper"\n[agent.policy]\nshell_user = "{SHELL_USER}"\n'
    )
    config.chmod(0o644)
    helper = ShellHelperProcess(directory, config, directory / "shell.sock", checkout=CHECKOUT)
    try:
        process = helper.start()
        yield Helper(helper.socket, process, helper.log_path, directory)
    finally:
        helper.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _processes_of(user: str, marker: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-u", user, "-f", marker], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def _leftovers_command(marker: str) -> str:
    """Processes a session might leave: one in its own job, one escaped with setsid."""
    return (
        f"(set -m; nohup sleep {marker} >/dev/null 2>&1 &); "
        f"setsid sh -c 'exec sleep {marker}' >/dev/null 2>&1 & "
        "sleep 0.2; echo READY"
    )


def test_the_shell_runs_as_the_maintenance_account_and_sees_every_process(
    helper: Helper,
) -> None:
    script = "id -un; id -u; echo HOME=$HOME USER=$USER; pwd; ps -e -o user= | sort -u"
    out = helper.run(f'{{"command": "{script}"}}')
    shell = pwd.getpwnam(SHELL_USER)
    lines = out.splitlines()
    assert lines[:4] == [SHELL_USER, str(shell.pw_uid), f"HOME={shell.pw_dir} USER={SHELL_USER}",
                         shell.pw_dir]  # fmt: skip
    users = set(lines[4:])
    # Not the agent's sandboxed view: root's processes (this test, the helper) are visible.
    assert "root" in users
    assert "EXIT 0" in out
    assert f"exec {script!r} started as {SHELL_USER}" in helper.log.read_text()


def test_a_terminal_session_has_a_controlling_tty_as_the_account(helper: Helper) -> None:
    spec = (
        '{"pty": true, "term": "xterm-256color", "cols": 132, "rows": 43, '
        '"input": "tty; id -un; stty size; echo $TERM; echo END-OF-' + "''" + 'TEST\\n"}'
    )
    out = helper.run(spec)
    assert "/dev/pts/" in out
    assert SHELL_USER in out
    assert "43 132" in out
    assert "xterm-256color" in out


def test_nothing_outlives_a_closed_session(helper: Helper) -> None:
    marker = str(4000 + secrets.randbelow(1000)) + ".5"
    client = helper.client(f'{{"command": "{_leftovers_command(marker)}"}}')
    assert client.stdout is not None
    assert "READY" in client.stdout.readline()
    wait_until(lambda: len(_processes_of(SHELL_USER, f"sleep {marker}")) == 2, timeout=10)
    client.communicate("", timeout=30)  # the agent closes the session
    wait_until(lambda: not _processes_of(SHELL_USER, f"sleep {marker}"), timeout=10)
    assert "process(es) left" in helper.log.read_text()


def test_nothing_outlives_an_agent_killed_with_sigkill(helper: Helper) -> None:
    marker = str(5000 + secrets.randbelow(1000)) + ".5"
    client = helper.client(f'{{"command": "{_leftovers_command(marker)}; sleep {marker}"}}')
    assert client.stdout is not None
    assert "READY" in client.stdout.readline()
    wait_until(lambda: len(_processes_of(SHELL_USER, f"sleep {marker}")) == 3, timeout=10)
    os.kill(client.pid, signal.SIGKILL)
    client.communicate(timeout=10)
    wait_until(lambda: not _processes_of(SHELL_USER, f"sleep {marker}"), timeout=10)


def test_a_caller_that_is_not_the_agent_is_refused(helper: Helper) -> None:
    shell = pwd.getpwnam(SHELL_USER)
    agent = pwd.getpwnam(AGENT_USER)
    # Another account that can reach the socket (it is in the agent's group)...
    intruder = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(helper.socket), '{"command": "id"}'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=CHECKOUT, env={"PYTHONPATH": str(CHECKOUT)},
        user=shell.pw_uid, group=shell.pw_gid, extra_groups=[agent.pw_gid],
    )  # fmt: skip
    out, err = intruder.communicate("", timeout=30)
    assert "REFUSED" in out, err
    assert "not the agent's account" in out
    # ... and root itself: only the agent's uid is served.
    assert "REFUSED" in helper.run('{"command": "id"}', user="root")
    log = helper.log.read_text()
    assert f"caller uid {shell.pw_uid}" in log
    assert "caller uid 0" in log
    # Without the group, the socket's mode already keeps it out.
    assert "Permission denied" in helper.run('{"command": "id"}', user=SHELL_USER)


@pytest.mark.parametrize(
    "spec",
    [
        '{"command": "id", "term": "xterm; rm -rf /", "pty": true}',
        '{"command": "id", "cols": 1000000}',
        '{"command": "id", "user": "root"}',
    ],
)
def test_a_bad_request_from_the_agent_is_refused(helper: Helper, spec: str) -> None:
    out = helper.run(spec)
    assert "REFUSED" in out


def test_the_helper_refuses_a_configuration_the_agent_could_change(accounts: None) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-helper-"))
    try:
        config = directory / "agent.toml"
        config.write_text(f'[agent.policy]\nshell_user = "{SHELL_USER}"\n')
        agent = pwd.getpwnam(AGENT_USER)
        os.chown(config, agent.pw_uid, agent.pw_gid)
        done = subprocess.run(
            [sys.executable, "-m", "shared", "agent", "shell-helper", "--config", str(config),
             "--agent-user", AGENT_USER, "--socket", str(directory / "s.sock")],
            capture_output=True, text=True, timeout=30, cwd=CHECKOUT, check=False,
        )  # fmt: skip
        assert done.returncode != 0
        assert "must belong to root" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (directory / "s.sock").exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate"
)
def test_the_helper_serves_the_socket_systemd_passes(accounts: None) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-helper-"))
    directory.chmod(0o755)
    config = directory / "agent.toml"
    config.write_text(f'[agent.policy]\nshell_user = "{SHELL_USER}"\n')
    socket_path = directory / "activated.sock"
    # As fieldlink-agent-shell.socket does: systemd owns the socket, the helper inherits it.
    activator = subprocess.Popen(
        ["systemd-socket-activate", "--listen", str(socket_path),
         sys.executable, "-m", "shared", "agent", "shell-helper", "--config", str(config),
         "--agent-user", AGENT_USER],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=CHECKOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: socket_path.exists(), timeout=30)
        agent = pwd.getpwnam(AGENT_USER)
        os.chown(socket_path, 0, agent.pw_gid)  # SocketGroup=, SocketMode= of the unit
        socket_path.chmod(0o660)
        helper = Helper(socket_path, activator, directory / "unused.log", directory)
        out = helper.run('{"command": "id -un"}')
        assert activator.poll() is None, activator.communicate()[0]
        assert out.splitlines()[0] == SHELL_USER
    finally:
        activator.terminate()
        activator.communicate(timeout=15)
        shutil.rmtree(directory, ignore_errors=True)


def _writable_cgroup2() -> Path | None:
    if os.geteuid() != 0:
        return None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if rest.startswith("cgroup2 ") and " rw" in f" {fields.split()[5]}":
            mount = Path(fields.split()[4])
            return mount if (mount / "cgroup.procs").exists() else None
    return None


@pytest.mark.skipif(_writable_cgroup2() is None, reason="needs a writable cgroup v2 hierarchy")
def test_under_systemd_each_session_has_its_own_cgroup(accounts: None) -> None:
    mount = _writable_cgroup2()
    assert mount is not None
    # What Delegate=yes gives the helper's unit: a cgroup of its own to manage.
    unit = mount / f"fieldlink-test-{secrets.token_hex(4)}"
    unit.mkdir()
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-helper-"))
    directory.chmod(0o755)
    config = directory / "agent.toml"
    config.write_text(f'[agent.policy]\nshell_user = "{SHELL_USER}"\n')
    started = ShellHelperProcess(
        directory, config, directory / "shell.sock", "--session-cgroups", checkout=CHECKOUT,
        wrapper=("sh", "-c", f'echo $$ > {unit}/cgroup.procs && exec "$@"', "sh"),
    )  # fmt: skip
    try:
        process = started.start()
        helper = Helper(started.socket, process, started.log_path, directory)
        marker = str(6000 + secrets.randbelow(1000)) + ".5"
        client = helper.client(
            f'{{"command": "setsid sh -c \'exec sleep {marker}\' >/dev/null 2>&1 & '
            f'sleep 0.2; echo READY"}}'
        )
        assert client.stdout is not None
        assert "READY" in client.stdout.readline()
        wait_until(lambda: len(_processes_of(SHELL_USER, f"sleep {marker}")) == 1, timeout=10)
        (escaped,) = _processes_of(SHELL_USER, f"sleep {marker}")
        cgroup = Path(f"/proc/{escaped}/cgroup").read_text()
        assert f"0::/{unit.name}/session-" in cgroup
        (session,) = [path for path in unit.iterdir() if path.name.startswith("session-")]
        assert (unit / "helper" / "cgroup.procs").read_text().split()[0] == str(process.pid)
        client.communicate("", timeout=30)
        wait_until(lambda: not _processes_of(SHELL_USER, f"sleep {marker}"), timeout=10)
        wait_until(lambda: not session.exists(), timeout=10)
    finally:
        started.stop()
        for leaf in unit.iterdir():
            if leaf.is_dir():
                with contextlib.suppress(OSError):
                    leaf.rmdir()
        unit.rmdir()
        shutil.rmtree(directory, ignore_errors=True)


def test_the_helper_runs_no_more_shells_than_allowed(accounts: None) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-helper-"))
    directory.chmod(0o755)
    config = directory / "agent.toml"
    config.write_text(f'[agent.policy]\nshell_user = "{SHELL_USER}"\n')
    started = ShellHelperProcess(
        directory, config, directory / "shell.sock", "--max-shells", "1", checkout=CHECKOUT
    )
    try:
        process = started.start()
        log = started.log_path
        helper = Helper(started.socket, process, log, directory)
        holder = helper.client('{"command": "echo READY; sleep 60"}')
        assert holder.stdout is not None
        assert "READY" in holder.stdout.readline()
        assert "too many shells at once" in helper.run('{"command": "id"}')
        holder.communicate("", timeout=30)  # the first shell ends: room for another
        wait_until(lambda: "ended" in log.read_text(), timeout=15)
        assert helper.run('{"command": "id -un"}').splitlines()[0] == SHELL_USER
    finally:
        started.stop()
        shutil.rmtree(directory, ignore_errors=True)
