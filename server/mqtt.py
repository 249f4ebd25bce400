"""The server's connection to the MQTT broker: URL parsing, TLS and credentials.

Two clients are built here: :func:`make_client` (aiomqtt, for asyncio code that
publishes now and then) and :func:`make_paho_client` (paho on its own network
thread, MQTT 5, for the ingest's hot path).

``broker_url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; with
``mqtts`` the broker is verified against ``broker_ca`` (or the system's trust
store) and the server presents ``broker_cert``/``broker_key`` when set, which
is how it authenticates to a broker that requires client certificates. On the
server's own listener of a ``broker-config`` broker it also needs its broker
password: ``broker_password``, else the one ``broker-config`` keeps in
``state_dir/pki/broker-server-password`` (with the username ``fieldlink_server``).
``embedded`` is resolved by whoever starts the embedded broker: it must hand
the ingest a settings copy whose ``broker_url`` names the broker's real port
(or set ``embedded_broker_port``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.broker import SERVER_PASSWORD_FILE
from provisioning.pki import SERVER_CLIENT_CN
from server.config import ServerSettings
from shared.broker_url import BrokerAddress, BrokerUrlError
from shared.errors import ConfigError

logger = logging.getLogger(__name__)

#: Every live TLS context that presents the server's certificate, with its files:
#: a renewed certificate is loaded into them (:func:`reload_client_certificates`), so
#: the next (re)connection presents it; established connections are not cut.
_CLIENT_CONTEXTS: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[str, str | None]] = (
    weakref.WeakKeyDictionary()
)


def parse_broker_url(url: str, *, embedded_port: int = 0) -> BrokerAddress:
    """Parse ``mqtt://`` / ``mqtts://`` URLs (credentials in the URL are allowed).

    ``embedded`` means a broker on ``127.0.0.1:embedded_port``.

    Raises:
        ConfigError: for another scheme, a missing host, a bad port, or ``embedded``
            before the embedded broker's port is known.
    """
    if url == "embedded":
        if not embedded_port:
            msg = "broker_url is 'embedded' but the embedded broker's port is not known yet"
            raise ConfigError(msg)
        return BrokerAddress("127.0.0.1", embedded_port, tls=False)
    try:
        return BrokerAddress.parse(url)
    except BrokerUrlError as exc:
        msg = f"broker_url {exc} (or 'embedded')"
        raise ConfigError(msg) from None


def credentials(settings: ServerSettings, address: BrokerAddress) -> tuple[str | None, str | None]:
    """The username and password the server presents to the broker.

    ``broker_username``/``broker_password``, else those of the URL; over TLS with a
    client certificate and no password configured, the broker password that
    ``fieldlink broker-config`` made (when there is one) as ``fieldlink_server``.
    """
    username = settings.broker_username or address.username
    password = settings.broker_password or address.password
    if password is None and address.tls and settings.broker_cert is not None:
        path = settings.state_dir / "pki" / SERVER_PASSWORD_FILE
        try:
            password = path.read_text().strip() or None
        except FileNotFoundError:
            password = None
        except OSError as exc:
            msg = f"cannot read the server's broker password from {path}: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
        if password is not None:
            username = username or SERVER_CLIENT_CN
    return username, password


def tls_context(settings: ServerSettings) -> ssl.SSLContext:
    """The TLS context for ``mqtts``: verify the broker, present the server's certificate.

    Raises:
        ConfigError: when a certificate or key file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(
            cafile=str(settings.broker_ca) if settings.broker_ca else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.broker_cert:
            files = (
                str(settings.broker_cert),
                str(settings.broker_key) if settings.broker_key else None,
            )
            context.load_cert_chain(*files)
            _CLIENT_CONTEXTS[context] = files
        elif settings.broker_key:
            msg = "broker_key is set without broker_cert"
            raise ConfigError(msg)
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load the broker TLS files: {exc}"
        raise ConfigError(msg) from exc
    return context


def reload_client_certificates(cert_path: Path | None = None) -> int:
    """Load the server's (renewed) certificate and key into every live TLS context.

    Args:
        cert_path: Only contexts presenting this certificate file (default: all).

    Returns:
        How many contexts were reloaded; one that fails keeps its old certificate.
    """
    reloaded = 0
    for context, (cert, key) in list(_CLIENT_CONTEXTS.items()):
        if cert_path is not None and Path(cert) != cert_path:
            continue
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            logger.warning("cannot reload the server's MQTT certificate %s: %s", cert, exc)
            continue
        reloaded += 1
    return reloaded


def make_client(
    settings: ServerSettings,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    keepalive: int = 30,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """An (unconnected) aiomqtt client for the server, built from its settings.

    Credentials come from ``broker_username``/``broker_password``, else from the URL.
    ``queue_type`` is aiomqtt's incoming-message queue class.
    Must be called inside a running event loop (aiomqtt binds to it).

    Raises:
        ConfigError: when the broker URL or TLS files are wrong.
    """
    address = parse_broker_url(settings.broker_url, embedded_port=settings.embedded_broker_port)
    username, password = credentials(settings, address)
    return aiomqtt.Client(
        address.host,
        address.port,
        identifier=identifier,
        username=username,
        password=password,
        will=will,
        clean_session=clean_session,
        keepalive=keepalive,
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_context=tls_context(settings) if address.tls else None,
        logger=logger,
        queue_type=queue_type,
    )


def make_paho_client(
    settings: ServerSettings, *, client_id: str, manual_ack: bool = False
) -> paho.Client:
    """An (unconnected) MQTT 5 paho client for the server, built from its settings.

    The caller connects it with ``connect_async(*broker_endpoint(settings), ...)``
    and runs its network thread with ``loop_start()``. With ``manual_ack`` a QoS 1
    message is acknowledged only when the caller calls ``client.ack(mid, 1)``.

    Raises:
        ConfigError: when the broker URL or TLS files are wrong.
    """
    address = parse_broker_url(settings.broker_url, embedded_port=settings.embedded_broker_port)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    username, password = credentials(settings, address)
    if username or password:
        client.username_pw_set(username, password)
    if address.tls:
        client.tls_set_context(tls_context(settings))
    client.enable_logger(logger)
    return client


def broker_endpoint(settings: ServerSettings) -> tuple[str, int]:
    """``(host, port)`` of the broker the settings name.

    Raises:
        ConfigError: when the broker URL is wrong.
    """
    address = parse_broker_url(settings.broker_url, embedded_port=settings.embedded_broker_port)
    return address.host, address.port
