"""Certificate renewal by the agent, against the real server app on a real HTTP port.

The server is ``server.main.create_app`` under uvicorn with a real device CA;
the device is enrolled with the agent's own ``enroll`` first. Bad answers come
from a small real HTTP server that signs what it is asked with the wrong key,
name or CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlmodel import Session

from agent.config import AgentSettings, load_agent_settings
from agent.health.link import BrokerLink
from agent.health.outbox import MemoryOutbox
from agent.identity.enroll import enroll
from agent.identity.renew import (
    RenewalFailed,
    certificate_not_after,
    discard_previous,
    needs_renewal,
    previous_path,
    recover_interrupted_renewal,
    renew_certificate,
)
from agent.identity.renewer import CertificateRenewer
from provisioning.ca import CertificateAuthority
from server import crud
from server.config import ServerSettings
from server.main import create_app
from server.models import Device, DeviceCreate
from shared.broker_url import BrokerAddress
from tests.fixtures.pki import self_signed
from tests.fixtures.ports import free_port
from tests.fixtures.uvicorn_app import serving

DEVICE = DeviceCreate(serial="RN-1", model="MP", type="mfp", customer="Acme")
DEVICE_ID = "mfp-rn-1"


# --- needs_renewal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "not_after",
    [
        datetime(2031, 5, 17, 8, 30, 12, tzinfo=UTC),  # UTCTime
        datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime, last year of it
        datetime(2050, 1, 1, tzinfo=UTC),  # GeneralizedTime from 2050 on
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # "no well-defined expiry"
    ],
)
def test_expiry_is_read_without_cryptography_as_cryptography_reads_it(
    tmp_path: Path, not_after: datetime
) -> None:
    cert = self_signed(tmp_path / "device.pem", not_after)
    assert certificate_not_after(tmp_path / "device.pem") == cert.not_valid_after_utc


def test_needs_renewal_boundaries(tmp_path: Path) -> None:
    not_after = datetime(2031, 5, 17, 8, 30, 12, tzinfo=UTC)
    path = tmp_path / "device.pem"
    self_signed(path, not_after)
    thirty_days = timedelta(days=30)
    due_from = not_after - thirty_days
    assert not needs_renewal(path, due_from - timedelta(seconds=1), thirty_days)
    assert needs_renewal(path, due_from, thirty_days)
    assert needs_renewal(path, not_after + timedelta(days=1), thirty_days)  # expired
    assert not needs_renewal(path, datetime(2030, 1, 1, tzinfo=UTC), thirty_days)
    # A window longer than the validity: due at once.
    assert needs_renewal(path, datetime(2030, 1, 1, tzinfo=UTC), timedelta(days=5000))


def test_an_unreadable_certificate_is_one_clear_error(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with pytest.raises(RenewalFailed, match="cannot read the device certificate"):
        needs_renewal(tmp_path / "missing.pem", now, timedelta(days=30))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(RenewalFailed, match="not a readable PEM certificate"):
        needs_renewal(garbage, now, timedelta(days=30))
    cert = self_signed(tmp_path / "whole.pem", datetime(2031, 1, 1, tzinfo=UTC))
    der = cert.public_bytes(serialization.Encoding.DER)
    truncated = tmp_path / "truncated.pem"
    truncated.write_text(
        "-----BEGIN CERTIFICATE-----\n"
        + base64.b64encode(der[:60]).decode()
        + "\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(RenewalFailed, match="not a readable PEM certificate"):
        needs_renewal(truncated, now, timedelta(days=30))


# --- a real server ----------------------------------------------------------------------


@dataclass
class Center:
    url: str
    settings: ServerSettings
    app: Any

    def session(self) -> Session:
        return Session(self.app.state.engine)

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.settings.state_dir)


@pytest.fixture
async def center(tmp_path: Path) -> AsyncIterator[Center]:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'fieldlink.db'}",
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
    )
    CertificateAuthority.init(settings.state_dir)
    app = create_app(settings)
    async with serving(app, lifespan="on") as port:
        yield Center(f"http://127.0.0.1:{port}", settings, app)


async def _enrolled(center: Center, directory: Path, **overrides: Any) -> AgentSettings:
    with center.session() as session:
        _, token = crud.register_device(session, data=DEVICE)
    config = await enroll(center.url, token, directory)
    return load_agent_settings(config, environ={}, **overrides)


def _pair(settings: AgentSettings) -> tuple[bytes, bytes]:
    assert settings.key_file is not None
    assert settings.cert_file is not None
    return settings.key_file.read_bytes(), settings.cert_file.read_bytes()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".prev", ".tmp")))


async def test_renewal_installs_a_new_pair_and_keeps_the_old_one_as_prev(
    center: Center, tmp_path: Path
) -> None:
    settings = await _enrolled(center, tmp_path / "device")
    assert settings.key_file is not None
    assert settings.cert_file is not None
    old_key, old_cert = _pair(settings)
    old_serial = x509.load_pem_x509_certificate(old_cert).serial_number

    outcome = await renew_certificate(settings)

    new_key, new_cert_pem = _pair(settings)
    assert new_key != old_key
    new_cert = x509.load_pem_x509_certificate(new_cert_pem)
    assert new_cert.serial_number != old_serial
    assert outcome.serial_hex == format(new_cert.serial_number, "x")
    assert outcome.not_after == new_cert.not_valid_after_utc
    private = serialization.load_pem_private_key(new_key, None)
    assert new_cert.public_key() == private.public_key()
    assert new_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE_ID
    # The working pair is kept until the new one has connected; keys stay private.
    assert previous_path(settings.key_file).read_bytes() == old_key
    assert previous_path(settings.cert_file).read_bytes() == old_cert
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    assert previous_path(settings.key_file).stat().st_mode & 0o777 == 0o600
    assert not [p for p in settings.key_file.parent.iterdir() if p.name.endswith(".tmp")]
    # The server knows the new certificate.
    with center.session() as session:
        device = session.get(Device, DEVICE_ID)
        assert device is not None
        assert device.cert_serial == outcome.serial_hex

    # The new key authenticates the next renewal.
    discard_previous(outcome.files)
    assert _leftovers(settings.key_file.parent) == []
    again = await renew_certificate(settings)
    assert again.serial_hex != outcome.serial_hex
    assert previous_path(settings.cert_file).read_bytes() == new_cert_pem


async def test_a_revoked_device_is_refused_and_keeps_its_pair(
    center: Center, tmp_path: Path
) -> None:
    settings = await _enrolled(center, tmp_path / "device")
    before = _pair(settings)
    with center.session() as session:
        crud.revoke_device(session, ca=center.ca(), device_id=DEVICE_ID)
    with pytest.raises(RenewalFailed, match=r"refused by the server \(HTTP 403\)") as refused:
        await renew_certificate(settings)
    assert len(str(refused.value).splitlines()) == 1
    assert "BEGIN" not in str(refused.value)
    assert _pair(settings) == before
    assert _leftovers(tmp_path / "device") == []


async def test_a_server_without_ca_is_refused_and_the_pair_kept(
    center: Center, tmp_path: Path
) -> None:
    settings = await _enrolled(center, tmp_path / "device")
    before = _pair(settings)
    pki = center.settings.state_dir / "pki"
    shutil.move(pki, center.settings.state_dir / "pki-away")
    with pytest.raises(RenewalFailed, match=r"HTTP 503"):
        await renew_certificate(settings)
    assert _pair(settings) == before
    assert _leftovers(tmp_path / "device") == []


async def test_a_key_that_is_not_the_certificates_is_refused(
    center: Center, tmp_path: Path
) -> None:
    settings = await _enrolled(center, tmp_path / "device")
    assert settings.key_file is not None
    stranger = ec.generate_private_key(ec.SECP256R1())
    settings.key_file.write_bytes(
        stranger.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    before = _pair(settings)
    with pytest.raises(RenewalFailed, match="proof does not verify"):
        await renew_certificate(settings)
    assert _pair(settings) == before


# --- answers that cannot be trusted -------------------------------------------------------

Answer = Callable[[dict[str, Any]], dict[str, Any]]


@contextlib.contextmanager
def answering(answer: Answer) -> Iterator[str]:
    """A real HTTP server on a free port whose /api/v1/renew answers ``answer(body)``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            raw = json.dumps(answer(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _csr_pem(key: ec.EllipticCurvePrivateKey) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
async def enrolled(center: Center, tmp_path: Path) -> AgentSettings:
    return await _enrolled(center, tmp_path / "device")


def _bad_answers(center: Center, tmp_path: Path) -> dict[str, tuple[Answer, str]]:
    ca = center.ca()
    foreign = CertificateAuthority.init(tmp_path / "foreign")

    def issued(authority: CertificateAuthority, csr_pem: str, device_id: str) -> dict[str, Any]:
        cert = authority.sign_device_csr(csr_pem, device_id)
        return {"device_id": DEVICE_ID, "cert_pem": cert.cert_pem, "not_after": "x"}

    return {
        "another key": (
            lambda _body: issued(ca, _csr_pem(ec.generate_private_key(ec.SECP256R1())), DEVICE_ID),
            "certificate for another key",
        ),
        "another name": (
            lambda body: issued(ca, body["csr_pem"], "mfp-someone-else"),
            "name is not this device's id",
        ),
        "a foreign CA": (
            lambda body: issued(foreign, body["csr_pem"], DEVICE_ID),
            "not issued by the device CA",
        ),
        "another device": (
            lambda body: {**issued(ca, body["csr_pem"], DEVICE_ID), "device_id": "mfp-other"},
            "not this device",
        ),
        "no certificate": (
            lambda _body: {"device_id": DEVICE_ID, "not_after": "x"},
            "lacks cert_pem",
        ),
        "garbage": (
            lambda _body: {"device_id": DEVICE_ID, "cert_pem": "nope", "not_after": "x"},
            "unreadable",
        ),
    }


async def test_answers_that_cannot_be_trusted_are_refused(
    center: Center, enrolled: AgentSettings, tmp_path: Path
) -> None:
    before = _pair(enrolled)
    for case, (answer, reason) in _bad_answers(center, tmp_path).items():
        with answering(answer) as url:
            settings = load_agent_settings(None, environ={}, **_values(enrolled, server_url=url))
            with pytest.raises(RenewalFailed, match=reason):
                await renew_certificate(settings)
        assert _pair(enrolled) == before, case
        assert _leftovers(tmp_path / "device") == [], case


def _values(settings: AgentSettings, **changes: Any) -> dict[str, Any]:
    keys = ("device_id", "broker_url", "ca_file", "cert_file", "key_file", "server_url")
    values = {key: str(getattr(settings, key)) for key in keys}
    values["state_dir"] = str(settings.state_dir)
    values.update(changes)
    return values


# --- the agent's periodic task ------------------------------------------------------------


def _link(settings: AgentSettings) -> BrokerLink:
    # Nothing listens there: the link never connects.
    return BrokerLink(
        settings.device_id,
        BrokerAddress("127.0.0.1", free_port(), tls=True),
        MemoryOutbox(10),
        boot_id="b",
        wake=asyncio.Event(),
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )


async def test_an_unreachable_server_is_retried_with_backoff(
    enrolled: AgentSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_agent_settings(
        None,
        environ={},
        **_values(enrolled, server_url=f"http://127.0.0.1:{free_port()}", renew_before_days=500),
    )
    before = _pair(settings)
    renewer = CertificateRenewer(settings, _link(settings), retry_min_s=0.02, retry_max_s=0.05)
    stopping = asyncio.Event()
    caplog.set_level(logging.INFO, logger="agent.identity.renewer")
    task = asyncio.create_task(renewer.check(stopping))
    await asyncio.sleep(0.6)
    stopping.set()
    assert await asyncio.wait_for(task, 10) is None
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 3
    assert "cannot reach the server" in retries[0].getMessage()
    assert _pair(settings) == before
    assert renewer.renewed == 0


async def test_a_pair_that_never_connects_is_rolled_back(
    center: Center, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = await _enrolled(center, tmp_path / "device", renew_before_days=500)
    before = _pair(settings)
    link = _link(settings)
    stopping = asyncio.Event()
    link_task = asyncio.create_task(link.run(stopping))
    renewer = CertificateRenewer(settings, link, confirm_timeout_s=0.5)
    try:
        assert await renewer.check(stopping) is None
    finally:
        stopping.set()
        await asyncio.wait_for(link_task, 10)
    assert "rolling back" in caplog.text
    assert _pair(settings) == before
    assert _leftovers(tmp_path / "device") == []
    # The link was handed the renewed pair, then the old one again.
    assert link.tls is not None


async def test_a_not_yet_due_certificate_is_left_alone(center: Center, tmp_path: Path) -> None:
    settings = await _enrolled(center, tmp_path / "device")  # 397 days left, renew at 30
    before = _pair(settings)
    renewer = CertificateRenewer(settings, _link(settings))
    assert await renewer.check(asyncio.Event()) is None
    assert _pair(settings) == before


async def test_an_interrupted_renewal_is_recovered_at_start(center: Center, tmp_path: Path) -> None:
    settings = await _enrolled(center, tmp_path / "device")
    assert settings.key_file is not None
    assert settings.cert_file is not None
    old = _pair(settings)
    await renew_certificate(settings)
    renewed = _pair(settings)
    # Cut short between the two renames: the new key beside the old certificate.
    settings.cert_file.write_bytes(old[1])
    assert recover_interrupted_renewal(settings) is True
    assert _pair(settings) == old
    assert _leftovers(tmp_path / "device") == []

    # A complete new pair is left for the renewer to confirm on its first connection.
    await renew_certificate(settings)
    renewed = _pair(settings)
    assert recover_interrupted_renewal(settings) is False
    assert _pair(settings) == renewed
    assert _leftovers(tmp_path / "device") == ["device.key.prev", "device.pem.prev"]

    # A lone .prev (cut short while copying) is dropped; the live pair was untouched.
    previous_path(settings.cert_file).unlink()
    assert recover_interrupted_renewal(settings) is False
    assert _leftovers(tmp_path / "device") == []


def test_renewal_settings_are_validated() -> None:
    settings = load_agent_settings(None, environ={}, device_id="d-1")
    assert settings.renew_before_days == 30
    assert settings.renew_check_interval_s == 6 * 3600
    from shared.errors import ConfigError

    for key, value in (("renew_before_days", "0"), ("renew_check_interval_s", "-1")):
        with pytest.raises(ConfigError, match=f"FIELDLINK_{key.upper()}: must be greater than 0"):
            load_agent_settings(None, environ={f"FIELDLINK_{key.upper()}": value}, device_id="d-1")
