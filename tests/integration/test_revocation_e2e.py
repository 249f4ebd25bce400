"""Revocation and a PKI that lives for years, against Mosquitto run with the generated config.

Real parts: `fieldlink ca init` / `broker-config`, Mosquitto started with that
`mosquitto.conf` (it writes its own pid file), `fieldlink server run`, devices
enrolled through the API and connecting with paho over mutual TLS. Nobody
sends the broker a signal by hand: the server does, through the pid file.
"""

from __future__ import annotations

import queue
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.ca import CertificateAuthority
from shared import topics
from shared.ids import utcnow
from tests.fixtures.center import TlsBroker, secure_center
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.processes import ServerProcess, wait_until

pytestmark = pytest.mark.integration

SETTLE_S = 5.0


class Link:
    """A paho client over mutual TLS that records what it receives."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, name: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._answered = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=f"{name}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.port = port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code == 0:
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._connected.clear()
        self._answered.set()

    def connect(self) -> bool:
        """Whether the broker accepts this identity now (CONNACK 0 within the bound)."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        self._answered.wait(SETTLE_S)
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(SETTLE_S)

    def received(self, topic: str, payload: bytes, within: float = SETTLE_S) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if self.messages.get(timeout=0.1) == (topic, payload):
                    return True
            except queue.Empty:
                continue
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def links() -> Iterator[list[Link]]:
    opened: list[Link] = []
    yield opened
    for link in opened:
        link.close()


def _enroll(server: ServerProcess, serial: str, directory: Path) -> tuple[str, Path, Path]:
    """Register and enroll a device through the API, its key made here as the agent does."""
    registered = server.api(
        "POST", "/devices", json={"serial": serial, "model": "M", "type": "mfp", "customer": "C"}
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enrolling")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    answer = httpx.post(
        f"{server.url}/api/v1/enroll",
        json={"token": registered["enrollment_token"], "csr_pem": csr},
        timeout=30,
    )
    answer.raise_for_status()
    device_id: str = answer.json()["device_id"]
    key_path, cert_path = directory / f"{device_id}.key", directory / f"{device_id}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_text(answer.json()["cert_pem"])
    return device_id, cert_path, key_path


def _link(
    broker: TlsBroker, pki: Path, cert: Path, key: Path, name: str, opened: list[Link]
) -> Link:
    link = Link(broker.port, pki / "ca.pem", cert, key, name)
    opened.append(link)
    return link


def _gauge(server: ServerProcess, line_start: str) -> float | None:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[1])
    return None


def test_revocation_from_the_api_ends_with_the_broker_refusing_the_device(
    tmp_path: Path, database_url: str, links: list[Link]
) -> None:
    with secure_center(tmp_path, database_url) as (server, broker):
        pki = tmp_path / "state" / "pki"
        device_id, cert, key = _enroll(server, "RV-1", tmp_path)
        observer = _link(broker, pki, pki / "server-client.pem", pki / "server-client.key",
                         "observer", links)  # fmt: skip
        assert observer.connect()
        observer.client.subscribe(topics.telemetry(device_id), qos=1)
        device = _link(broker, pki, cert, key, device_id, links)
        assert device.connect()
        time.sleep(0.3)
        device.publish(topics.telemetry(device_id), b"before")
        assert observer.received(topics.telemetry(device_id), b"before")

        revoked = server.api("POST", f"/devices/{device_id}/revoke")
        assert revoked["revoked_at"] is not None
        assert revoked["broker"]["state"] == "applied", revoked["broker"]
        assert revoked["broker"]["last_error"] is None

        # Mosquitto reloads on SIGHUP in its next loop turn: from then on the device's live
        # connection is silenced (the ACL's deny block)...
        attempts = iter(range(1000))

        def silenced() -> bool:
            payload = f"after-{next(attempts)}".encode()
            device.publish(topics.telemetry(device_id), payload)
            return not observer.received(topics.telemetry(device_id), payload, within=0.5)

        wait_until(silenced, 10)
        # ...and, the same reload having read the CRL, it is refused when it connects again.
        # (Not probed earlier: the broker binds a device's client id to its certificate, so
        # a probe accepted before the reload would take over the live connection's session.)
        assert not _link(broker, pki, cert, key, f"{device_id}-again", links).connect()
        assert _gauge(server, "fieldlink_broker_revocations_pending") == 0
        assert broker.process is not None
        assert broker.process.poll() is None  # reloaded, not restarted


def test_a_reload_that_fails_first_is_retried_until_the_broker_has_it(
    tmp_path: Path, database_url: str, links: list[Link]
) -> None:
    with secure_center(tmp_path, database_url, broker_update_retry_s=0.5) as (server, broker):
        pki = tmp_path / "state" / "pki"
        device_id, cert, key = _enroll(server, "RV-2", tmp_path)
        # The broker cannot be found (as while it restarts): its pid file is gone.
        away = broker.pid_file.with_suffix(".away")
        broker.pid_file.rename(away)

        revoked = server.api("POST", f"/devices/{device_id}/revoke")
        state = revoked["broker"]
        assert state["state"] == "pending"
        assert state["pending_since"] is not None
        assert "cannot read the broker's pid" in state["last_error"]
        assert server.device(device_id)["revoked_at"] is not None  # the server refuses it now
        assert _gauge(server, "fieldlink_broker_revocations_pending") == 1
        # Honest: the broker has not reloaded, so it still lets the device in.
        early = _link(broker, pki, cert, key, f"{device_id}-early", links)
        assert early.connect()

        away.rename(broker.pid_file)  # the broker is back: no one does anything else
        wait_until(lambda: _gauge(server, "fieldlink_broker_revocations_pending") == 0, 15)
        wait_until(
            lambda: not _link(broker, pki, cert, key, f"{device_id}-late", links).connect(), 10
        )


def _broker_certificate(port: int, ca: Path, cert: Path, key: Path) -> x509.Certificate:
    """The certificate the broker presents now (verified against the CA)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_an_aged_pki_is_renewed_by_the_server_and_the_broker_keeps_accepting_devices(
    tmp_path: Path, database_url: str, links: list[Link]
) -> None:
    """Time moved forward: the CA made 800 days ago, its CRL expired, service certs ending."""
    now = utcnow()
    state_dir = tmp_path / "state"
    ca = CertificateAuthority.init(state_dir, now=now - timedelta(days=800))
    ca.write_crl(now - timedelta(days=366))  # nobody revoked anything for a year
    expired = ca.crl_next_update()
    assert expired is not None
    assert expired < now
    old_broker_serial = x509.load_pem_x509_certificate(
        ca.paths.broker_cert.read_bytes()
    ).serial_number
    old_server_cert = ca.paths.server_client_cert.read_bytes()
    device_key = ec.generate_private_key(ec.SECP256R1())
    device_cert = ca.issue_client_certificate_for_key(device_key.public_key(), "mfp-aged")
    key_path = tmp_path / "mfp-aged.key"
    key_path.write_bytes(
        device_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path = tmp_path / "mfp-aged.pem"
    cert_path.write_text(device_cert.cert_pem)

    port, server_port = free_port(), free_port()
    # The server on its own listener (certificate and broker password), devices on theirs.
    server = ServerProcess(
        tmp_path, database_url, f"mqtts://127.0.0.1:{server_port}",
        device_broker_url=f"mqtts://127.0.0.1:{port}",
        broker_ca=str(ca.paths.ca_cert), broker_cert=str(ca.paths.server_client_cert),
        broker_key=str(ca.paths.server_client_key),
    )  # fmt: skip
    broker_dir = Path(tempfile.mkdtemp(prefix="fieldlink-broker-"))
    broker_dir.chmod(0o755)
    done = server.cli("broker-config", "--out", str(broker_dir), "--port", str(port),
                      "--bind", "127.0.0.1", "--server-port", str(server_port),
                      "--server-bind", "127.0.0.1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    broker = TlsBroker(broker_dir, port, server_port)
    broker.start()
    try:
        # The failure this prevents: with an expired CRL the broker refuses every device.
        refused = _link(broker, ca.paths.root, cert_path, key_path, "before", links)
        assert not refused.connect()

        with server:  # ready only once its ingest is connected: the broker took it back
            wait_until(lambda: (_gauge(server, 'fieldlink_pki_expiry_timestamp_seconds{item="crl"}')
                                or 0) > (now + timedelta(days=300)).timestamp(), 15)  # fmt: skip
            for item in ("broker_cert", "server_cert"):
                until = _gauge(server, f'fieldlink_pki_expiry_timestamp_seconds{{item="{item}"}}')
                assert until is not None, item
                assert until > (now + timedelta(days=700)).timestamp(), item
            ca_until = _gauge(server, 'fieldlink_pki_expiry_timestamp_seconds{item="ca"}')
            assert ca_until == pytest.approx(ca.cert.not_valid_after_utc.timestamp())
            assert _gauge(server, "fieldlink_device_certificates_expiring") == 0
            assert ca.paths.server_client_cert.read_bytes() != old_server_cert

            wait_for_port(port)
            wait_until(
                lambda: _link(broker, ca.paths.root, cert_path, key_path, "after", links).connect(),
                15,
                interval=0.5,
            )
            served = _broker_certificate(port, ca.paths.ca_cert, cert_path, key_path)
            assert served.serial_number != old_broker_serial
            assert served.not_valid_after_utc > now + timedelta(days=700)
            # The server itself, with its renewed certificate, is connected too.
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
    finally:
        broker.stop()
