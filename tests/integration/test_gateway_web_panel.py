"""A remote session to a printer watched through a site gateway reaches the printer's web page.

Real parts throughout: `fieldlink server run` with its CA, a TLS Mosquitto and its SSH
gateway (`secure_center`), a site gateway enrolled with `fieldlink agent enroll` and
running `fieldlink agent run` with ``[[agent.devices]]``, the printer's web panel (an
HTTP server on loopback, the printer's address in the gateway's table), the operator's
`fieldlink connect` after `fieldlink login`, and the real OpenSSH client.

The session is the printer's (recorded and audited on the printer's id) while its signed
``session.open`` goes to the gateway's agent. It reaches the printer's page and nothing
else: not a service the site did not allowlist for watched devices, not the gateway's
own services, not another host or port, no shell on the gateway.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.center import enroll_agent, secure_center
from tests.fixtures.ports import free_port
from tests.fixtures.processes import (
    AgentProcess,
    ServerProcess,
    run_fieldlink,
    start_fieldlink,
    wait_until,
)

pytestmark = pytest.mark.integration

PRINTER_PAGE = b"<html><body>MP 6055 Web Image Monitor</body></html>"
GATEWAY_PAGE = b"<html><body>the gateway's own admin page</body></html>"
PRINTER = "mfp-3f-east"
GATEWAY = "server-gw-1"


def _panel(page: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Panel(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args: Any) -> None:
            return

    return Panel


@pytest.fixture(scope="module")
def panels() -> Iterator[tuple[int, int]]:
    """The printer's web panel and a page of the gateway's own, both on loopback."""
    servers = [
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), _panel(page))
        for page in (PRINTER_PAGE, GATEWAY_PAGE)
    ]
    for httpd in servers:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield int(servers[0].server_address[1]), int(servers[1].server_address[1])
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Site:
    server: ServerProcess
    env: dict[str, str]
    ssh_port: int
    known_hosts: Path
    key: Path
    printer_port: int
    gateway_port: int

    def fieldlink(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_fieldlink(self.env, *args, stdin=stdin)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_fieldlink(self.env, *args)

    def ssh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ssh", *self.ssh_options(), "-p", str(self.ssh_port), *args],
            capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def ssh_options(self) -> list[str]:
        return [
            "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
            "-i", str(self.key),
        ]  # fmt: skip

    def sessions(self, device_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.server.api(
            "GET", "/sessions", params={"device_id": device_id, "limit": 200}
        )["items"]
        return found

    def last_session(self, device_id: str = PRINTER) -> dict[str, Any]:
        return max(self.sessions(device_id), key=lambda s: s["created_at"])

    def closed(self, session_id: str) -> dict[str, Any]:
        def closed() -> dict[str, Any] | None:
            row: dict[str, Any] = self.server.api("GET", f"/sessions/{session_id}")
            return row if row["state"] == "closed" else None

        wait_until(closed, timeout=20)
        row = closed()
        assert row is not None
        return row


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, panels: tuple[int, int]) -> Iterator[Site]:
    printer_port, gateway_port = panels
    tmp = tmp_path_factory.mktemp("gateway-web")
    with secure_center(tmp, f"sqlite:///{tmp / 'fieldlink.db'}") as (server, _broker):
        ssh_port = free_port()
        server.restart_with_gateway_port(ssh_port)
        body = {"id": GATEWAY, "serial": "GW-1", "model": "gw", "type": "server", "customer": "A"}
        token = server.api("POST", "/devices", json=body)["enrollment_token"]
        gateway_dir = tmp / "gateway"
        enrolled = enroll_agent(server, token, gateway_dir)
        assert enrolled.returncode == 0, enrolled.stderr
        for device_id, serial in ((PRINTER, "E1"), ("mfp-not-listed", "E2")):
            body = {"id": device_id, "serial": serial, "model": "MP 6055", "type": "mfp",
                    "customer": "A", "via": GATEWAY}  # fmt: skip
            server.api("POST", "/devices", json=body)
        config = gateway_dir / "agent.toml"
        # The printer's SNMP goes unanswered (UDP discard port): sessions need no SNMP.
        config.write_text(
            config.read_text()
            + f'\n[[agent.devices]]\nid = "{PRINTER}"\nhost = "127.0.0.1"\nport = 9\n'
            f'snmp_community = "public"\nsnmp_timeout_s = 0.2\nweb_port = {printer_port}\n'
        )
        agent = AgentProcess(tmp, GATEWAY, "unused")
        agent.config = config
        agent._spawn(
            [sys.executable, "-m", "shared", "agent", "run", "--config", str(config)],
            FIELDLINK_INTERVAL_S="2", FIELDLINK_STATE_DIR=str(tmp / "agent-state"),
            FIELDLINK_KEEPALIVE_S="5", FIELDLINK_RECONNECT_MIN_S="0.2",
            FIELDLINK_RECONNECT_MAX_S="1",
            # The gateway's own service, and a site that lets sessions to watched devices
            # reach their plain-HTTP page only.
            FIELDLINK_SERVICES=json.dumps({"admin": f"127.0.0.1:{gateway_port}"}),
            FIELDLINK_POLICY=json.dumps({"consent": "none", "idle_timeout_s": 600,
                                         "shell": "/bin/sh", "watched_services": ["web"]}),
        )  # fmt: skip
        try:
            wait_until(lambda: server.device(GATEWAY)["online"], timeout=30)
            host_key = (tmp / "state" / "ssh_gateway_ed25519_key.pub").read_text().split()
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {host_key[0]} {host_key[1]}\n")
            done = server.cli("user", "add", "olga", "--role", "operator", stdin="pw-12345678\n")
            assert done.returncode == 0, done.stderr
            key = tmp / "olga_ed25519"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True, capture_output=True,
            )  # fmt: skip
            done = server.cli("user", "add-key", "olga", f"{key}.pub")
            assert done.returncode == 0, done.stderr
            env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
            env["FIELDLINK_CREDENTIALS"] = str(tmp / "credentials.json")
            env["PYTHONUNBUFFERED"] = "1"
            running = Site(server, env, ssh_port, known_hosts, key, printer_port, gateway_port)
            login = running.fieldlink(
                "login", "--server", server.url, "--user", "olga", stdin="pw-12345678\n"
            )
            assert login.returncode == 0, login.stderr
            yield running
        finally:
            agent.stop()


def test_connect_web_reaches_the_printers_page_in_a_session_of_the_printer(site: Site) -> None:
    process = site.start("connect", PRINTER, "web", "--port", "0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("forwarding 127.0.0.1:"), line + (process.stderr.read() or "")  # type: ignore[union-attr]
        local = int(line.split()[1].rsplit(":", 1)[1])
        for _ in range(2):
            page = httpx.get(f"http://127.0.0.1:{local}/", timeout=30)
            assert page.status_code == 200
            assert page.content == PRINTER_PAGE
    finally:
        process.send_signal(2)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    # The printer's session, recorded under the printer's id; none on the gateway.
    row = site.closed(site.last_session()["id"])
    assert row["device_id"] == PRINTER
    assert row["services_used"] == ["forward:web"]
    assert row["close_reason"] == "operator"
    assert row["bytes_from_device"] >= 2 * len(PRINTER_PAGE)
    assert site.sessions(GATEWAY) == []
    opened = site.server.api(
        "GET", "/audit", params={"action": "session.open", "target": PRINTER, "limit": 50}
    )["items"]
    assert any(
        entry["details"]["session_id"] == row["id"] and entry["details"]["via"] == GATEWAY
        for entry in opened
    )


def test_a_service_the_site_does_not_allow_for_watched_devices_is_refused(site: Site) -> None:
    # https is a watched device's service, but this site allows only web.
    refused = site.fieldlink("connect", PRINTER, "https")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "site_denied" in lines[0]
    assert "not_allowed" in lines[0]
    assert site.last_session()["close_reason"] == "site_denied"


def test_a_printer_session_reaches_nothing_of_the_gateway_and_no_other_host(site: Site) -> None:
    opened = site.fieldlink("session", "open", PRINTER, "--reason", "panel")
    assert opened.returncode == 0, opened.stderr
    sid = opened.stdout.strip()
    try:
        # The gateway's own service, by name: not a service of the printer.
        done = site.fieldlink("connect", PRINTER, "admin", "--session", sid)
        assert done.returncode == 1
        assert "refused" in done.stderr, done.stderr
    finally:
        site.fieldlink("session", "close", sid)

    # With OpenSSH through the server's SSH gateway: another port of the gateway's
    # loopback, and a port the printer's page is not on, are refused by the gateway's agent.
    for target in (f"127.0.0.1:{site.gateway_port}", "127.0.0.1:22", f"{GATEWAY}:80"):
        local = free_port()
        process = subprocess.Popen(
            ["ssh", *site.ssh_options(), "-p", str(site.ssh_port), "-N",
             "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:{target}",
             f"{PRINTER}@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"FIELDLINK_REASON": "x"},
        )  # fmt: skip
        try:

            def ready(port: int = local, ssh: subprocess.Popen[bytes] = process) -> bool:
                if ssh.poll() is not None:
                    return True
                with socket.socket() as probe:
                    return probe.connect_ex(("127.0.0.1", port)) == 0

            wait_until(ready, timeout=20)
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            with socket.create_connection(("127.0.0.1", local), timeout=20) as client:
                client.settimeout(20)
                assert client.recv(100) == b""  # OpenSSH closes it: the channel was refused
        finally:
            process.terminate()
            try:
                _, stderr = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate(timeout=20)
        assert b"administratively prohibited" in stderr, stderr
        row = site.closed(site.last_session()["id"])
        assert row["device_id"] == PRINTER
        assert row["services_used"] == []

    # No shell or command on the gateway through the printer's session.
    shell = site.ssh(f"{PRINTER}@127.0.0.1", "id")
    assert shell.returncode != 0
    assert b"uid=" not in shell.stdout
    assert b"forwards to the device only" in shell.stderr, shell.stderr
    row = site.closed(site.last_session()["id"])
    # The gateway's agent refused the channel and said so (kept with the session).
    wait_until(
        lambda: any(
            r["kind"] == "channel" and r["target"] == "exec"
            for r in site.server.api("GET", f"/sessions/{row['id']}")["refusals"]
        ),
        timeout=15,
    )


def test_a_device_registered_via_the_gateway_but_not_in_its_table_is_refused(
    site: Site,
) -> None:
    refused = site.fieldlink("connect", "mfp-not-listed", "web")
    assert refused.returncode == 1
    assert "not_allowed" in refused.stderr, refused.stderr
    assert site.last_session("mfp-not-listed")["close_reason"] == "site_denied"
