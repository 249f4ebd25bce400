"""The OpenSSH baseline the tunnel benchmarks compare against: ``ssh -R`` to a private sshd.

A reverse tunnel as sites have run them for decades: the device's ``ssh``
client holds ``-R`` forwards open to a server's sshd, and the operator
reaches the device's services (and its own sshd) through those ports.
Here both ends run on loopback: a private sshd on a free port (own host key,
own ``authorized_keys``, nothing of the system's), and the real ``ssh``
client holding one ``-R`` per target. The cipher is the one fieldlink's
tunnel prefers (aes128-gcm), so the comparison is like for like.

    with OpenSSHTunnel(workdir, {"sink": sink_port, "sshd": None}) as tunnel:
        tunnel.ports["sink"]    # 127.0.0.1 port forwarded to the sink through the tunnel
        tunnel.login_command(tunnel.ports["sshd"])  # ssh into the sshd through the tunnel
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from tests.fixtures.ports import free_port, wait_for_port

CIPHER = "aes128-gcm@openssh.com"


class OpenSSHMissing(RuntimeError):
    """No sshd (or no ssh client) on this machine."""


def sshd_binary() -> str | None:
    """The sshd binary, or ``None`` (``apt-get install openssh-server``)."""
    found = shutil.which("sshd")
    if found:
        return found
    return "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None


class OpenSSHTunnel:
    """A private sshd on a free port and an ``ssh -R`` client holding forwards through it.

    Args:
        workdir: A private folder for keys and the sshd configuration.
        targets: Name to 127.0.0.1 port of what each ``-R`` forward reaches;
            ``None`` means the private sshd itself (a login through the tunnel).
    """

    def __init__(self, workdir: Path, targets: dict[str, int | None]) -> None:
        self.workdir = workdir
        self.targets = targets
        self.sshd_port = 0
        self.ports: dict[str, int] = {}
        self.daemon: subprocess.Popen[bytes] | None = None
        self.client: subprocess.Popen[bytes] | None = None
        self.user = os.environ.get("USER") or "root"

    @property
    def key(self) -> Path:
        """The client key (authorized for the private sshd)."""
        return self.workdir / "client"

    def start(self) -> None:
        """Start sshd and the ``ssh -R`` client; wait until every forward listens.

        Raises:
            OpenSSHMissing: sshd or ssh is not installed.
        """
        sshd = sshd_binary()
        if sshd is None or shutil.which("ssh") is None:
            msg = "OpenSSH server not installed (apt-get install openssh-server)"
            raise OpenSSHMissing(msg)
        for name in ("host", "client"):
            if not (self.workdir / name).exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.workdir / name)],
                    check=True,
                )
        (self.workdir / "authorized_keys").write_text((self.workdir / "client.pub").read_text())
        self.sshd_port = free_port()
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.sshd_port}\nListenAddress 127.0.0.1\nHostKey {self.workdir / 'host'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\nPidFile none\nUsePAM no\n"
            "StrictModes no\nPasswordAuthentication no\nAllowTcpForwarding yes\n"
            f"PermitRootLogin yes\nCiphers {CIPHER}\nPrintMotd no\nPrintLastLog no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 1000\nMaxSessions 1000\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.daemon = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL
        )
        wait_for_port(self.sshd_port)
        forwards: list[str] = []
        for name, target in self.targets.items():
            self.ports[name] = free_port()
            forwards += ["-R", f"127.0.0.1:{self.ports[name]}:127.0.0.1:{target or self.sshd_port}"]
        self.client = subprocess.Popen(
            ["ssh", "-N", *self.options(self.sshd_port), "-o", "ExitOnForwardFailure=yes",
             *forwards, f"{self.user}@127.0.0.1"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for port in self.ports.values():
                wait_for_port(port)
        except Exception:
            self.stop()
            raise

    def options(self, port: int) -> list[str]:
        """ssh options to reach the private sshd (directly or through a forward) on ``port``."""
        return [
            "-p", str(port), "-i", str(self.key), "-c", CIPHER,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def login_command(self, port: int, *command: str) -> list[str]:
        """``ssh -tt`` into the private sshd through ``port`` (a PTY; a login shell by default)."""
        return ["ssh", "-tt", *self.options(port), f"{self.user}@127.0.0.1", *command]

    def stop(self) -> None:
        """Stop the client, then sshd."""
        for process in (self.client, self.daemon):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.client = self.daemon = None

    def __enter__(self) -> OpenSSHTunnel:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
