"""``broker_url = "embedded"``: a private Mosquitto the server starts and stops itself.

Why Mosquitto and not an in-process Python broker: the tests and production run
Mosquitto, so the demo exercises the same broker; amqtt (the in-process
choice) manages about 1,400 msg/s at QoS 1 and pins an old ``websockets``.
The embedded broker listens on loopback only, so anonymous access reaches
nothing beyond this machine; production uses the mutual-TLS configuration of
``fieldlink broker-config``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import socket
from pathlib import Path

from shared.errors import UnavailableError

logger = logging.getLogger(__name__)

CONFIG = """\
# Written by fieldlink for broker_url = "embedded"; regenerated at every start.
listener {port} 127.0.0.1
allow_anonymous true
# Sessions and retained messages (births, the server's announcement) survive a restart.
persistence true
persistence_location {persistence}/
autosave_interval 60
log_dest stderr
log_type error
log_type warning
# Debian's defaults (1000 queued, 20 in flight) silently drop bursts.
max_queued_messages 100000
max_inflight_messages 100
max_keepalive 3600
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, if installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class EmbeddedBroker:
    """A Mosquitto child process on a loopback port (``port=0`` picks a free one)."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self._dir = state_dir / "broker"
        self.port = port
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start Mosquitto and wait until it accepts connections.

        Raises:
            UnavailableError: when Mosquitto is not installed, the port is taken, or it fails.
        """
        binary = find_mosquitto()
        if binary is None:
            msg = (
                "broker_url = 'embedded' needs Mosquitto: apt-get install mosquitto "
                "(or set broker_url to an MQTT URL)"
            )
            raise UnavailableError(msg)
        if self.port == 0:
            self.port = _free_port()
        elif _port_taken(self.port):
            msg = (
                f"embedded broker port {self.port} is taken: set embedded_broker_port "
                "to a free port, or 0 to pick one"
            )
            raise UnavailableError(msg)
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "mosquitto.conf"
        self._dir.chmod(0o700)
        text = CONFIG.format(port=self.port, persistence=self._dir)
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user: give it the folder it saves to.
            try:
                account = pwd.getpwnam("mosquitto")
                os.chown(self._dir, account.pw_uid, account.pw_gid)
            except KeyError:
                text += "user root\n"
        config.write_text(text)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(200):
            if self._process.returncode is not None:
                break
            if _port_taken(self.port):
                logger.info("embedded broker listening on %s", self.url)
                return
            await asyncio.sleep(0.025)
        stderr = b""
        if self._process.returncode is not None and self._process.stderr is not None:
            stderr = await self._process.stderr.read()
        await self.stop()
        msg = f"embedded broker did not start: {stderr.decode(errors='replace').strip()[-300:]}"
        raise UnavailableError(msg)

    async def stop(self) -> None:
        """Stop Mosquitto (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            process.kill()
            await process.wait()
