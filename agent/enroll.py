"""``fieldlink agent enroll``: give this device its identity, with its private key made here.

The device makes its own ECDSA P-256 key (it never leaves the device), sends
a certificate signing request with the one-time token the administrator
handed over to ``POST /api/v1/enroll``, checks what comes back (the
certificate is for *this* key and signed by the CA that came with it), and
writes into the target folder::

    device.key                  the device's private key (0600)
    device.pem                  its certificate, CN = device id
    ca.pem                      the device CA (verifies the broker)
    command-signing.pub.pem     the server's command key, pinned from now on
    ssh_host_ed25519_key(.pub)  the host key of the agent's SSH server (0600)
    agent.toml                  [agent] settings naming all of the above

Nothing is written unless enrollment succeeds, so a failed attempt leaves a
working identity in place. ``cryptography`` is imported only here, when
enrolling.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from shared.errors import FieldlinkError, UnavailableError
from shared.ids import is_device_id
from shared.signing import load_public_key, write_file_atomic

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

logger = logging.getLogger(__name__)

DEFAULT_DIR: Final = Path("/etc/fieldlink")
DEFAULT_STATE_DIR: Final = Path("/var/lib/fieldlink-agent")
ENROLL_PATH: Final = "/api/v1/enroll"
FILES: Final = {
    "key": "device.key",
    "cert": "device.pem",
    "ca": "ca.pem",
    "command_key": "command-signing.pub.pem",
    "ssh_host_key": "ssh_host_ed25519_key",
    "config": "agent.toml",
}
_RESPONSE_FIELDS: Final = (
    "device_id",
    "cert_pem",
    "ca_pem",
    "broker_url",
    "server_url",
    "command_public_key_pem",
)
_MAX_RESPONSE_BYTES: Final = 256 * 1024


class EnrollmentFailed(FieldlinkError):
    """The server refused the enrollment, or answered something this agent cannot trust."""


@dataclass(frozen=True)
class _DeviceKeys:
    tls_key: ec.EllipticCurvePrivateKey
    ssh_host_key: ed25519.Ed25519PrivateKey
    csr_pem: str
    ssh_public: str


def _make_keys() -> _DeviceKeys:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    tls_key = ec.generate_private_key(ec.SECP256R1())
    # The CA sets the real subject (CN = the device id the token belongs to).
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldlink-enrollment")]))
        .sign(tls_key, hashes.SHA256())
    )
    ssh_host_key = ed25519.Ed25519PrivateKey.generate()
    ssh_public = (
        ssh_host_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return _DeviceKeys(
        tls_key=tls_key,
        ssh_host_key=ssh_host_key,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
        ssh_public=ssh_public,
    )


def _enroll_url(server_url: str) -> str:
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"--server must be an http(s):// URL, not {server_url!r}"
        raise EnrollmentFailed(msg)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        logger.warning("enrolling over plain http: the token crosses the network unencrypted")
    return server_url.rstrip("/") + ENROLL_PATH


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _detail(body: bytes) -> str:
    try:
        detail: Any = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    if isinstance(detail, list):
        # FastAPI validation errors: name the first field and its problem.
        first = detail[0] if detail and isinstance(detail[0], dict) else {}
        where = ".".join(str(part) for part in first.get("loc", []) if part != "body")
        return f"{where}: {first.get('msg', '')}".strip(": ")
    return str(detail) if detail else ""


def _post(url: str, body: dict[str, str], ca_file: Path | None, timeout: float) -> dict[str, Any]:
    """POST the request (blocking; run in a thread)."""
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked to be http(s)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            raw = response.read(_MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = _detail(exc.read(_MAX_RESPONSE_BYTES))
        reason = detail or exc.reason or "no detail"
        msg = f"enrollment refused by the server (HTTP {exc.code}): {reason}"
        raise EnrollmentFailed(msg) from None
    except urllib.error.URLError as exc:
        msg = f"cannot reach the server at {url}: {exc.reason}"
        raise UnavailableError(msg) from None
    except (TimeoutError, OSError) as exc:
        msg = f"cannot reach the server at {url}: {exc}"
        raise UnavailableError(msg) from None
    if len(raw) > _MAX_RESPONSE_BYTES:
        msg = "the server's enrollment answer is too large"
        raise EnrollmentFailed(msg)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        msg = "the server's enrollment answer is not a JSON object"
        raise EnrollmentFailed(msg)
    return data


def certificate_mismatch(
    cert: x509.Certificate, private_key: Any, device_id: str
) -> Literal["key", "name"] | None:
    """What makes ``cert`` not this device's certificate for ``private_key``, if anything.

    Returns:
        ``"key"`` when it certifies another public key, ``"name"`` when its CN is not
        ``device_id``, ``None`` when it is the device's.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return "key"
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != device_id:
        return "name"
    return None


def _check_answer(data: dict[str, Any], keys: _DeviceKeys) -> tuple[x509.Certificate, str]:
    """Check the server's answer; return the device certificate and the device id."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    missing = [name for name in _RESPONSE_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        msg = f"the server's enrollment answer lacks {', '.join(missing)}"
        raise EnrollmentFailed(msg)
    device_id = data["device_id"]
    if not is_device_id(device_id):
        msg = f"the server assigned an invalid device id {device_id!r}"
        raise EnrollmentFailed(msg)
    try:
        cert = x509.load_pem_x509_certificate(data["cert_pem"].encode())
        ca = x509.load_pem_x509_certificate(data["ca_pem"].encode())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        msg = "the server's certificate or CA is unreadable or does not match"
        raise EnrollmentFailed(msg) from exc
    except InvalidSignature as exc:
        msg = "the certificate is not signed by the CA the server sent"
        raise EnrollmentFailed(msg) from exc
    mismatch = certificate_mismatch(cert, keys.tls_key, device_id)
    if mismatch == "key":
        msg = "the server returned a certificate for another key"
        raise EnrollmentFailed(msg)
    if mismatch == "name":
        msg = "the certificate's name is not the device id the server assigned"
        raise EnrollmentFailed(msg)
    try:
        load_public_key(data["command_public_key_pem"])
    except FieldlinkError as exc:
        msg = f"the server's command key is unusable: {exc}"
        raise EnrollmentFailed(msg) from exc
    if not data["broker_url"].startswith(("mqtt://", "mqtts://")):
        msg = f"the server's broker_url is not an mqtt(s):// URL: {data['broker_url']!r}"
        raise EnrollmentFailed(msg)
    return cert, device_id


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_agent_toml(values: dict[str, str]) -> str:
    """The ``[agent]`` section written after enrollment."""
    lines = ["# Written by `fieldlink agent enroll`.", "[agent]"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _write_identity(
    directory: Path, data: dict[str, Any], keys: _DeviceKeys, device_id: str, server_url: str
) -> Path:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / file_name for name, file_name in FILES.items()}
    no_encryption = serialization.NoEncryption()
    write_file_atomic(
        paths["key"],
        keys.tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_encryption
        ),
        mode=0o600,
    )
    write_file_atomic(
        paths["ssh_host_key"],
        keys.ssh_host_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, no_encryption
        ),
        mode=0o600,
    )
    write_file_atomic(
        directory / (FILES["ssh_host_key"] + ".pub"), keys.ssh_public.encode() + b"\n", mode=0o644
    )
    write_file_atomic(paths["cert"], data["cert_pem"].encode(), mode=0o644)
    write_file_atomic(paths["ca"], data["ca_pem"].encode(), mode=0o644)
    write_file_atomic(paths["command_key"], data["command_public_key_pem"].encode(), mode=0o644)
    state_dir = DEFAULT_STATE_DIR if directory == DEFAULT_DIR else directory / "state"
    config = render_agent_toml(
        {
            "device_id": device_id,
            "broker_url": data["broker_url"],
            "server_url": data["server_url"] or server_url,
            "ca_file": str(paths["ca"]),
            "cert_file": str(paths["cert"]),
            "key_file": str(paths["key"]),
            "command_key_file": str(paths["command_key"]),
            "state_dir": str(state_dir),
        }
    )
    write_file_atomic(paths["config"], config.encode(), mode=0o644)
    return paths["config"]


async def enroll(
    server_url: str,
    token: str,
    directory: Path,
    *,
    ca_file: Path | None = None,
    http_timeout_s: float = 30.0,
) -> Path:
    """Enroll this device with the center and write its identity into ``directory``.

    Args:
        server_url: The center's URL, e.g. ``https://fieldlink.example.com``.
        token: The one-time enrollment token from ``fieldlink device add``.
        directory: Where to write keys, certificates and ``agent.toml``.
        ca_file: A CA bundle to verify an https server with (default: the system's).
        http_timeout_s: Seconds to wait for the server's answer.

    Returns:
        The path of the written ``agent.toml``.

    Raises:
        EnrollmentFailed: the server refused (its ``detail`` in one line) or
            answered something inconsistent.
        UnavailableError: the server cannot be reached.
    """
    url = _enroll_url(server_url)
    keys = await asyncio.to_thread(_make_keys)
    body = {"token": token, "csr_pem": keys.csr_pem, "ssh_host_key": keys.ssh_public}
    data = await asyncio.to_thread(_post, url, body, ca_file, http_timeout_s)
    _, device_id = _check_answer(data, keys)
    try:
        config_path = await asyncio.to_thread(
            _write_identity, directory, data, keys, device_id, server_url
        )
    except OSError as exc:
        msg = f"cannot write the device identity to {directory}: {exc.strerror or exc}"
        raise EnrollmentFailed(msg) from exc
    logger.info("enrolled as %s; configuration in %s", device_id, config_path)
    return config_path
