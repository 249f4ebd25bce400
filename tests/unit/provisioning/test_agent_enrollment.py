"""``fieldlink agent enroll`` against a real HTTP endpoint built on the provisioning library."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.config import load_agent_settings
from agent.identity.enroll import EnrollmentFailed, enroll
from provisioning.ca import CertificateAuthority
from provisioning.enroll import (
    EnrollmentError,
    UsedEnrollmentToken,
    enroll_device,
    hash_enrollment_token,
    issue_enrollment_token,
)
from provisioning.pki import BadCsr
from shared.errors import UnavailableError
from shared.ids import utcnow
from tests.fixtures.pki import make_csr
from tests.fixtures.ports import free_port


@dataclass
class PendingDevice:
    id: str
    enrollment_token_hash: str | None
    enrollment_expires_at: datetime | None
    enrolled_at: datetime | None = None
    ssh_host_key: str | None = None


@dataclass
class Center:
    """A minimal enrollment endpoint: the provisioning library behind stdlib HTTP."""

    ca: CertificateAuthority
    url: str = ""
    devices: dict[str, PendingDevice] = field(default_factory=dict)
    #: When set, answer with a certificate for another key (a misbehaving server).
    swap_key: bool = False
    #: The broker URL the answer names.
    broker_url: str = "mqtts://127.0.0.1:8883"

    def add(self, device_id: str) -> str:
        issued = issue_enrollment_token()
        self.devices[device_id] = PendingDevice(device_id, issued.token_hash, issued.expires_at)
        return issued.token

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = body.get("token", "")
        wanted = hash_enrollment_token(token)
        record = next(
            (dev for dev in self.devices.values() if dev.enrollment_token_hash == wanted), None
        )
        csr = make_csr()[0] if self.swap_key else body.get("csr_pem", "")
        try:
            result = enroll_device(self.ca, token, record, csr)
        except UsedEnrollmentToken as exc:
            return 409, {"detail": str(exc)}
        except EnrollmentError as exc:
            return 401, {"detail": str(exc)}
        except BadCsr as exc:
            return 400, {"detail": str(exc)}
        assert record is not None
        record.enrolled_at = utcnow()
        record.ssh_host_key = body.get("ssh_host_key")
        return 200, result.response(broker_url=self.broker_url, server_url=self.url)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[Center]:
    state = Center(CertificateAuthority.init(tmp_path / "center"))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            status, answer = (
                state.handle(body) if self.path == "/api/v1/enroll" else (404, {"detail": "nf"})
            )
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_enroll_writes_a_working_identity(center: Center, tmp_path: Path) -> None:
    token = center.add("mfp-0042")
    directory = tmp_path / "device"
    config_path = await enroll(center.url, token, directory)

    settings = load_agent_settings(config_path)
    assert settings.device_id == "mfp-0042"
    assert settings.broker_url == "mqtts://127.0.0.1:8883"
    assert settings.server_url == center.url
    assert settings.command_key_file is not None
    assert settings.command_key_file.read_text() == center.ca.command_public_key_pem
    assert settings.ca_file is not None
    assert settings.ca_file.read_text() == center.ca.ca_pem
    assert settings.key_file is not None
    assert settings.cert_file is not None
    for secret in (settings.key_file, directory / "ssh_host_ed25519_key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # The key was made here and matches the certificate the CA signed.
    key = serialization.load_pem_private_key(settings.key_file.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(settings.cert_file.read_bytes())
    assert cert.public_key() == key.public_key()
    # The SSH host key's public half reached the center.
    pub = (directory / "ssh_host_ed25519_key.pub").read_text().strip()
    assert center.devices["mfp-0042"].ssh_host_key == pub
    assert pub.startswith("ssh-ed25519 ")


async def test_second_use_of_a_token_fails_with_the_servers_reason(
    center: Center, tmp_path: Path
) -> None:
    token = center.add("mfp-0042")
    await enroll(center.url, token, tmp_path / "first")
    with pytest.raises(EnrollmentFailed) as info:
        await enroll(center.url, token, tmp_path / "second")
    message = str(info.value)
    assert message.startswith("enrollment refused by the server (HTTP 409): ")
    assert "already used" in message
    assert token not in message
    assert not (tmp_path / "second").exists()


async def test_unknown_token_fails_cleanly(center: Center, tmp_path: Path) -> None:
    with pytest.raises(EnrollmentFailed, match=r"HTTP 401.*unknown enrollment token"):
        await enroll(center.url, "not-a-token", tmp_path / "device")


async def test_certificate_for_another_key_is_not_accepted(center: Center, tmp_path: Path) -> None:
    center.swap_key = True
    token = center.add("mfp-0042")
    with pytest.raises(EnrollmentFailed, match="another key"):
        await enroll(center.url, token, tmp_path / "device")
    assert not (tmp_path / "device").exists()


@pytest.mark.parametrize(
    "broker_url", ["mqtts://", "mqtt://:1883", "mqtts://host:99999", "http://host:8883"]
)
async def test_an_answer_naming_an_unusable_broker_url_is_refused(
    center: Center, tmp_path: Path, broker_url: str
) -> None:
    # The same parser the agent's settings use later (shared.broker_url): a URL that
    # passes enrollment but not the daemon's start would leave a device that never connects.
    center.broker_url = broker_url
    token = center.add("mfp-0042")
    with pytest.raises(EnrollmentFailed, match="broker_url is unusable"):
        await enroll(center.url, token, tmp_path / "device")
    assert not (tmp_path / "device").exists()


async def test_unreachable_server_and_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="cannot reach"):
        await enroll(f"http://127.0.0.1:{free_port()}", "token", tmp_path)
    with pytest.raises(EnrollmentFailed, match="http"):
        await enroll("ftp://center.example.com", "token", tmp_path)
