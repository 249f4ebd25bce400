"""The agent over mutual TLS: it verifies the broker by the CA and presents its own certificate."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import load_agent_settings
from agent.supervisor import agent_from_settings
from shared.errors import ConfigError
from tests.fixtures.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate for tls-0001.

    World-readable in its own directory: Mosquitto started as root drops to the
    ``mosquitto`` user, which cannot enter pytest's private temporary folders.
    """
    directory = Path(tempfile.mkdtemp(prefix="fieldlink-pki-"))
    directory.chmod(0o755)
    try:
        yield from _make_pki(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _make_pki(directory: Path) -> Iterator[Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("fieldlink test CA", ca_key, ca_key, None, ca=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, ip in (("broker", "127.0.0.1"), ("tls-0001", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(name, key, ca_key, ca.subject, ip=ip)
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / f"{name}.key", key)
    for path in directory.iterdir():
        path.chmod(0o644)
    yield directory


@pytest.fixture
def tls_broker(pki: Path) -> Iterator[MosquittoBroker]:
    listener = (
        "listener {port} 127.0.0.1\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\nkeyfile {pki / 'broker.key'}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
    )
    with MosquittoBroker(listener_config=listener) as broker:
        yield broker


async def test_agent_publishes_over_mutual_tls(
    tls_broker: MosquittoBroker, pki: Path, tmp_path: Path
) -> None:
    settings = load_agent_settings(
        None,
        environ={},
        device_id="tls-0001",
        broker_url=f"mqtts://127.0.0.1:{tls_broker.port}",
        interval_s=0.2,
        state_dir=str(tmp_path / "state"),
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / "tls-0001.pem"),
        key_file=str(pki / "tls-0001.key"),
    )
    agent = await agent_from_settings(settings)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.link.connected.wait(), 10)
        # Connected over TLS with a client certificate the broker required, and acked.
        for _ in range(200):
            if agent.link.published >= 2:
                break
            await asyncio.sleep(0.05)
        assert agent.link.published >= 2
        assert await agent.outbox.count() <= 1
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
        await agent.outbox.close()


async def test_agent_without_client_certificate_is_refused(
    tls_broker: MosquittoBroker, pki: Path, tmp_path: Path
) -> None:
    settings = load_agent_settings(
        None,
        environ={},
        device_id="tls-0002",
        broker_url=f"mqtts://127.0.0.1:{tls_broker.port}",
        interval_s=0.2,
        state_dir=str(tmp_path / "state"),
        ca_file=str(pki / "ca.pem"),
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
    )
    agent = await agent_from_settings(settings)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(1.5)
        assert not agent.link.connected.is_set()
        # It keeps sampling into the outbox all the same.
        assert await agent.outbox.count() >= 3
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
        await agent.outbox.close()


async def test_unreadable_certificate_is_a_config_error(pki: Path, tmp_path: Path) -> None:
    settings = load_agent_settings(
        None,
        environ={},
        device_id="tls-0003",
        broker_url="mqtts://127.0.0.1:8883",
        state_dir=str(tmp_path / "state"),
        ca_file=str(pki / "ca.pem"),
        cert_file=str(tmp_path / "missing.pem"),
        key_file=str(tmp_path / "missing.key"),
    )
    with pytest.raises(ConfigError, match=r"cert_file: cannot read .*missing\.pem"):
        await agent_from_settings(settings)
