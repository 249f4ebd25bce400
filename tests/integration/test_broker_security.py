"""The generated Mosquitto configuration, run for real: who may connect, publish and read what.

A real Mosquitto starts with the exact ``mosquitto.conf``, ACL and CRL that
``fieldlink broker-config`` writes; clients are paho over real TLS with
certificates issued by the CA from CSRs, as enrollment does.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.broker import (
    BrokerConfig,
    ingest_group,
    publish_revocations,
    server_broker_password,
    write_broker_config,
)
from provisioning.ca import CertificateAuthority
from provisioning.pki import SERVER_CLIENT_CN
from shared import topics
from tests.fixtures.managed import ManagedProcess
from tests.fixtures.mosquitto import mosquitto_binary
from tests.fixtures.ports import accepts, free_port

pytestmark = pytest.mark.integration

SETTLE_S = 5.0


@dataclass(frozen=True)
class Identity:
    """A client certificate and its key on disk."""

    name: str
    cert: Path
    key: Path


@dataclass
class Broker:
    """The CA, the generated broker config, and the running Mosquitto."""

    ca: CertificateAuthority
    config: BrokerConfig
    managed: ManagedProcess
    work: Path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.managed.process is not None, "the broker is not running"
        return self.managed.process

    @property
    def log(self) -> Path:
        return self.managed.log_path

    @property
    def port(self) -> int:
        return self.config.port

    def device(self, device_id: str) -> Identity:
        """Enroll a device the way the agent does: key made here, CSR signed by the CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enrolling")]))
            .sign(key, hashes.SHA256())
        )
        issued = self.ca.sign_device_csr(
            csr.public_bytes(serialization.Encoding.PEM).decode(), device_id
        )
        return self._save(device_id, key, issued.cert_pem.encode())

    def _save(self, name: str, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> Identity:
        key_path = self.work / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path = self.work / f"{name}.pem"
        cert_path.write_bytes(cert_pem)
        return Identity(name, cert_path, key_path)

    @property
    def server_identity(self) -> Identity:
        paths = self.ca.paths
        return Identity("server", paths.server_client_cert, paths.server_client_key)


class Client:
    """A paho client over TLS that records what it receives.

    The server's identity goes to the server's listener with its broker password,
    as the server does; everything else to the devices' listener, unless ``port``,
    ``username`` or ``password`` say otherwise.
    """

    def __init__(
        self,
        broker: Broker,
        identity: Identity | None,
        *,
        ca_file: Path | None = None,
        client_id: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ):
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._done = threading.Event()
        self.refused = False
        self.disconnects = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=client_id
            or f"test-{identity.name if identity else 'anon'}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        if identity is not None and identity.name == "server" and port is None:
            port = broker.config.server_port
            username = username or SERVER_CLIENT_CN
            password = password or server_broker_password(broker.ca)
        if username is not None or password is not None:
            self.client.username_pw_set(username, password)
        self.client.tls_set(
            ca_certs=str(ca_file or broker.ca.paths.ca_cert),
            certfile=str(identity.cert) if identity else None,
            keyfile=str(identity.key) if identity else None,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.port = port or broker.port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code == 0:
            self._connected.set()
        else:
            self.refused = True
        self._done.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if self._connected.is_set():
            self.disconnects += 1
        self._connected.clear()
        self._done.set()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        self.messages.put((message.topic, message.payload))

    def connect(self) -> bool:
        """Try to connect; tell whether the broker accepted (CONNACK 0) within the bound."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except OSError:
            return False
        self.client.loop_start()
        self._done.wait(SETTLE_S)
        return self._connected.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, topic: str) -> None:
        result, _mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(SETTLE_S)

    def expect(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait for one message; return everything received before it."""
        before: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if item == (topic, payload):
                return before
            before.append(item)
        pytest.fail(f"{topic} {payload!r} never arrived (got {before})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _start(ca: CertificateAuthority, root: Path) -> Broker:
    # The broker folder must be reachable by the mosquitto user (the broker drops to it as root).
    broker_dir = Path(tempfile.mkdtemp(prefix="fieldlink-broker-"))
    config = write_broker_config(
        ca, broker_dir, port=free_port(), server_port=free_port(), persistence=False
    )
    managed = ManagedProcess("mosquitto", root / "mosquitto.log", stop_timeout=5)
    managed.start_and_wait(
        [mosquitto_binary(), "-c", str(config.conf)],
        lambda: accepts(config.port) and accepts(config.server_port),
    )
    work = root / "clients"
    work.mkdir()
    return Broker(ca=ca, config=config, managed=managed, work=work)


def _stop(broker: Broker) -> None:
    broker.managed.stop()
    shutil.rmtree(broker.config.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One CA and one broker from the generated config for this module's tests."""
    root = tmp_path_factory.mktemp("broker-security")
    ca = CertificateAuthority.init(root / "state")
    running = _start(ca, root)
    try:
        yield running
    finally:
        _stop(running)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opens, all closed after it."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _connected(broker: Broker, identity: Identity | None, opened: list[Client]) -> Client:
    client = Client(broker, identity)
    opened.append(client)
    assert client.connect(), f"{identity.name if identity else 'anonymous'} could not connect"
    return client


def test_device_publishes_its_telemetry_and_the_server_receives_it(
    broker: Broker, clients: list[Client]
) -> None:
    server = _connected(broker, broker.server_identity, clients)
    server.subscribe(topics.telemetry("+"))
    time.sleep(0.2)
    device = _connected(broker, broker.device("mfp-tele-1"), clients)
    device.publish(topics.telemetry("mfp-tele-1"), b'{"seq":0}')
    assert server.expect(topics.telemetry("mfp-tele-1"), b'{"seq":0}') == []


def test_server_receives_through_the_shared_ingest_subscription(
    broker: Broker, clients: list[Client]
) -> None:
    server = _connected(broker, broker.server_identity, clients)
    for topic_filter in topics.ingest_filters():
        server.subscribe(topic_filter)
    time.sleep(0.2)
    device = _connected(broker, broker.device("mfp-share-1"), clients)
    for kind in ("telemetry", "state", "events", "cmd/result"):
        device.publish(topics.device_topic("mfp-share-1", kind), kind.encode())
        server.expect(topics.device_topic("mfp-share-1", kind), kind.encode())


def test_device_cannot_publish_into_another_devices_topics(
    broker: Broker, clients: list[Client]
) -> None:
    server = _connected(broker, broker.server_identity, clients)
    server.subscribe("fieldlink/v1/#")
    time.sleep(0.2)
    intruder = _connected(broker, broker.device("mfp-intruder-a"), clients)
    victim = "mfp-victim-b"
    for kind in ("telemetry", "state", "events", "cmd/result"):
        intruder.publish(topics.device_topic(victim, kind), b"forged")
    intruder.publish(topics.SERVER_STATE, b"forged")
    intruder.publish("fieldlink/v1/other/thing", b"forged")
    # The intruder's own telemetry goes through after the forgeries, on the same
    # connection: anything forged that got through would have arrived first.
    intruder.publish(topics.telemetry("mfp-intruder-a"), b"control")
    assert server.expect(topics.telemetry("mfp-intruder-a"), b"control") == []


def test_device_cannot_read_another_devices_commands(broker: Broker, clients: list[Client]) -> None:
    snoop = _connected(broker, broker.device("mfp-snoop-a"), clients)
    snoop.subscribe(topics.cmd("mfp-target-b"))
    snoop.subscribe("fieldlink/v1/#")
    snoop.subscribe("#")
    snoop.subscribe(topics.cmd("mfp-snoop-a"))
    time.sleep(0.2)
    server = _connected(broker, broker.server_identity, clients)
    server.publish(topics.cmd("mfp-target-b"), b"secret command")
    server.publish(topics.telemetry("mfp-target-b"), b"their telemetry")
    server.publish(topics.cmd("mfp-snoop-a"), b"own command")
    assert snoop.expect(topics.cmd("mfp-snoop-a"), b"own command") == []


def test_device_reads_the_server_announcement(broker: Broker, clients: list[Client]) -> None:
    server = _connected(broker, broker.server_identity, clients)
    server.publish(topics.SERVER_STATE, b'{"online":true}', retain=True)
    device = _connected(broker, broker.device("mfp-announce-1"), clients)
    device.subscribe(topics.SERVER_STATE)
    device.expect(topics.SERVER_STATE, b'{"online":true}')


def test_device_cannot_publish_any_command(broker: Broker, clients: list[Client]) -> None:
    server = _connected(broker, broker.server_identity, clients)
    server.subscribe(topics.cmd("+"))
    server.subscribe(topics.telemetry("mfp-cmd-a"))
    other = _connected(broker, broker.device("mfp-cmd-b"), clients)
    other.subscribe(topics.cmd("mfp-cmd-b"))
    time.sleep(0.2)
    device = _connected(broker, broker.device("mfp-cmd-a"), clients)
    device.publish(topics.cmd("mfp-cmd-a"), b"self-issued command")
    device.publish(topics.cmd("mfp-cmd-b"), b"command to b")
    device.publish(topics.telemetry("mfp-cmd-a"), b"control")
    assert server.expect(topics.telemetry("mfp-cmd-a"), b"control") == []
    # b's own subscription received nothing either; the server's command to b does arrive.
    server.publish(topics.cmd("mfp-cmd-b"), b"real command")
    assert other.expect(topics.cmd("mfp-cmd-b"), b"real command") == []


def test_client_without_certificate_cannot_connect(broker: Broker, clients: list[Client]) -> None:
    anonymous = Client(broker, None)
    clients.append(anonymous)
    assert not anonymous.connect()


def test_certificate_from_another_ca_cannot_connect(
    broker: Broker, clients: list[Client], tmp_path: Path
) -> None:
    rogue_ca = CertificateAuthority.init(tmp_path / "rogue")
    key = ec.generate_private_key(ec.SECP256R1())
    issued = rogue_ca.issue_client_certificate_for_key(key.public_key(), "mfp-rogue-1")
    rogue = broker._save("mfp-rogue-1", key, issued.cert_pem.encode())
    client = Client(broker, rogue)
    clients.append(client)
    assert not client.connect()
    # Even its server identity (CN fieldlink_server) is refused: only the CA counts.
    impostor = Client(
        broker,
        Identity("impostor", rogue_ca.paths.server_client_cert, rogue_ca.paths.server_client_key),
    )
    clients.append(impostor)
    assert not impostor.connect()


def test_revoked_certificate_is_refused_and_silenced_after_reload(
    broker: Broker, clients: list[Client]
) -> None:
    server = _connected(broker, broker.server_identity, clients)
    server.subscribe(topics.telemetry("+"))
    time.sleep(0.2)
    revoked_identity = broker.device("mfp-revoked-1")
    witness = _connected(broker, broker.device("mfp-witness-1"), clients)
    live = _connected(broker, revoked_identity, clients)
    live.publish(topics.telemetry("mfp-revoked-1"), b"before")
    server.expect(topics.telemetry("mfp-revoked-1"), b"before")

    assert broker.ca.revoke_device("mfp-revoked-1")
    assert publish_revocations(broker.ca, broker_pid=broker.process.pid)

    # New connections with the revoked certificate fail once the broker reloaded.
    deadline = time.monotonic() + SETTLE_S
    while True:
        attempt = Client(broker, revoked_identity)
        clients.append(attempt)
        if not attempt.connect():
            break
        # Its client id is its CN: the newer connection took the session over.
        live = attempt
        assert time.monotonic() < deadline, "revoked certificate still accepted after reload"
        time.sleep(0.1)
    # The connection it already had is silenced by the ACL: nothing it sends arrives.
    live.publish(topics.telemetry("mfp-revoked-1"), b"after")
    witness.publish(topics.telemetry("mfp-witness-1"), b"control")
    assert server.expect(topics.telemetry("mfp-witness-1"), b"control") == []
    # Other devices are unaffected.
    assert _connected(broker, broker.device("mfp-after-revoke"), clients).connected


def test_rsa_fallback_ca_serves_devices(tmp_path: Path, clients: list[Client]) -> None:
    ca = CertificateAuthority.init(tmp_path / "state", key_type="rsa-2048")
    rsa_broker = _start(ca, tmp_path)
    try:
        server = _connected(rsa_broker, rsa_broker.server_identity, clients)
        server.subscribe(topics.telemetry("+"))
        time.sleep(0.2)
        device = _connected(rsa_broker, rsa_broker.device("mfp-rsa-1"), clients)
        device.publish(topics.telemetry("mfp-rsa-1"), b"rsa")
        server.expect(topics.telemetry("mfp-rsa-1"), b"rsa")
    finally:
        for client in clients:
            client.close()
        clients.clear()
        _stop(rsa_broker)


# -- issue 11: the shared subscription and the session takeover ------------------------


def test_a_device_cannot_take_a_share_of_the_servers_ingest(
    broker: Broker, clients: list[Client]
) -> None:
    """A device that subscribes to the server's shared subscription used to get every
    other message of the fleet delivered to it (and dropped there by the ACL): 30 of
    70 samples lost in 30 s. The server's group is a secret of the center now."""
    server = _connected(broker, broker.server_identity, clients)
    for topic_filter in topics.ingest_filters(ingest_group(broker.ca)):
        server.subscribe(topic_filter)
    rogue = _connected(broker, broker.device("mfp-share-rogue"), clients)
    # The documented default group, a guess, a plain wildcard: none costs the server a message.
    for topic_filter in [
        *topics.ingest_filters(topics.INGEST_GROUP),
        *topics.ingest_filters("fieldlink"),
        topics.telemetry("+"),
    ]:
        rogue.subscribe(topic_filter)
    time.sleep(0.3)
    device = _connected(broker, broker.device("mfp-share-victim"), clients)
    payloads = [f'{{"seq":{seq}}}'.encode() for seq in range(40)]
    for payload in payloads:
        device.publish(topics.telemetry("mfp-share-victim"), payload)
    device.publish(topics.telemetry("mfp-share-victim"), b"end")
    received = server.expect(topics.telemetry("mfp-share-victim"), b"end")
    victim_topic = topics.telemetry("mfp-share-victim")
    assert [payload for topic, payload in received if topic == victim_topic] == payloads
    # (It may read the server's announcement, as every device may; nothing else.)
    assert {topic for topic, _payload in rogue.messages.queue} <= {topics.SERVER_STATE}


def test_a_device_cannot_take_over_another_devices_session(
    broker: Broker, clients: list[Client]
) -> None:
    """Connecting with device B's client id (and A's certificate) used to kick B off:
    15 forced disconnects of B in 20 s. The broker now uses the certificate's CN as
    the client id, whatever the client asks for."""
    victim_identity = broker.device("mfp-session-b")
    victim = Client(broker, victim_identity, client_id="mfp-session-b")
    clients.append(victim)
    assert victim.connect()
    victim.subscribe(topics.cmd("mfp-session-b"))
    attacker_identity = broker.device("mfp-session-a")
    for _attempt in range(3):
        attacker = Client(broker, attacker_identity, client_id="mfp-session-b")
        clients.append(attacker)
        attacker.connect()
    time.sleep(1.0)
    assert victim.connected
    assert victim.disconnects == 0
    # B's session is intact: the server's command still reaches it.
    server = _connected(broker, broker.server_identity, clients)
    server.publish(topics.cmd("mfp-session-b"), b"still here")
    assert victim.expect(topics.cmd("mfp-session-b"), b"still here") == []


def test_a_device_cannot_use_the_servers_listener(broker: Broker, clients: list[Client]) -> None:
    """The server's listener keeps client ids as asked: a device there could kick
    anyone, so it needs the server's password on top of a certificate."""
    victim = Client(broker, broker.device("mfp-listener-b"), client_id="mfp-listener-b")
    clients.append(victim)
    assert victim.connect()
    attacker_identity = broker.device("mfp-listener-a")
    attempts = [
        {},
        {"username": "mfp-listener-a"},
        {"username": SERVER_CLIENT_CN},
        {"username": SERVER_CLIENT_CN, "password": "guess"},
    ]
    for credentials in attempts:
        attacker = Client(
            broker,
            attacker_identity,
            client_id="mfp-listener-b",
            port=broker.config.server_port,
            **credentials,
        )
        clients.append(attacker)
        assert not attacker.connect(), credentials
    time.sleep(0.5)
    assert victim.connected
    assert victim.disconnects == 0
    # The password alone is not enough either: the listener wants a CA certificate too.
    no_cert = Client(
        broker,
        None,
        port=broker.config.server_port,
        username=SERVER_CLIENT_CN,
        password=server_broker_password(broker.ca),
    )
    clients.append(no_cert)
    assert not no_cert.connect()
