"""Certificate renewal: the agent replaces its own certificate before it expires.

The device makes a new ECDSA P-256 key (as at enrollment), a CSR for it, and
a proof that it holds its *current* key: that key's signature over the CSR's
DER bytes, base64url without padding. It posts its current certificate, the
CSR and the proof to ``POST /api/v1/renew``, checks the answer (a certificate
for the new key, with the device id as CN, issued by the CA in ``ca_file``),
and installs it::

    device.key.prev, device.pem.prev    copies of the working pair, kept first
    device.key (0600), device.pem       the new pair, each written to a temporary
                                        file and renamed over the old one

The link to the broker then reconnects with a TLS context built from the new
files (:class:`agent.identity.renewer.CertificateRenewer`, the agent's periodic
task). Once it has connected with them, the ``.prev`` copies are deleted; if it
cannot connect within a while, they are put back and the link reconnects with
the old pair (which is still valid: renewal starts weeks before expiry). A
renewal that fails, is refused, or gets an answer this agent cannot trust
leaves the working pair as it was; an unreachable server is retried with
backoff.

Checking whether renewal is due reads the certificate's expiry with a few
lines of DER walking: the idle agent never imports ``cryptography`` (about
7 MB resident); it is loaded only when a renewal is actually due.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.config import AgentSettings
from shared.errors import FieldlinkError
from shared.ids import utcnow

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

logger = logging.getLogger(__name__)

RENEW_PATH: Final = "/api/v1/renew"
PREVIOUS_SUFFIX: Final = ".prev"
_PEM_BEGIN: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_END: Final = b"-----END CERTIFICATE-----"
_RESPONSE_FIELDS: Final = ("device_id", "cert_pem", "not_after")


class RenewalFailed(FieldlinkError):
    """Renewal was refused, or its answer cannot be trusted; the working pair is unchanged."""


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """Where this device's identity lives, and where the previous pair is kept meanwhile."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def previous_cert_file(self) -> Path:
        """The working certificate, kept until the new one has connected once."""
        return previous_path(self.cert_file)

    @property
    def previous_key_file(self) -> Path:
        """The working key, kept until the new one has connected once."""
        return previous_path(self.key_file)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> IdentityFiles | None:
        """The identity files of ``settings``, or ``None`` when one is not configured."""
        if settings.cert_file is None or settings.key_file is None or settings.ca_file is None:
            return None
        return cls(settings.cert_file, settings.key_file, settings.ca_file)


@dataclass(frozen=True, slots=True)
class RenewalOutcome:
    """A certificate renewed and installed.

    Attributes:
        device_id: The device (the certificate's CN).
        serial_hex: The new certificate's serial, lowercase hex (as the server shows it).
        not_after: When the new certificate expires.
        files: Where the new pair was written (the old one is kept as ``*.prev``).
    """

    device_id: str
    serial_hex: str
    not_after: datetime
    files: IdentityFiles


def previous_path(path: Path) -> Path:
    """Where the working copy of ``path`` is kept during a renewal (``device.pem.prev``)."""
    return path.with_name(path.name + PREVIOUS_SUFFIX)


# --- is renewal due? (no cryptography) --------------------------------------------------


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """The tag, content start and content end of the DER element at ``offset``."""
    if offset + 2 > len(data):
        msg = "truncated DER"
        raise ValueError(msg)
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            msg = "unsupported DER length"
            raise ValueError(msg)
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        msg = "truncated DER"
        raise ValueError(msg)
    return tag, start, end


def _der_time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")  # ends in Z: UTC, set below
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")  # ends in Z: UTC, set below
    else:
        msg = "notAfter is not a time"
        raise ValueError(msg)
    return parsed.replace(tzinfo=UTC)


def certificate_not_after(cert_path: Path) -> datetime:
    """When the (first) PEM certificate in ``cert_path`` expires.

    Walks Certificate > TBSCertificate > Validity in the DER bytes (RFC 5280,
    section 4.1) rather than importing ``cryptography`` for one date.

    Raises:
        RenewalFailed: when the file cannot be read or holds no readable certificate.
    """
    try:
        pem = cert_path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the device certificate {cert_path}: {exc.strerror or exc}"
        raise RenewalFailed(msg) from exc
    try:
        begin = pem.index(_PEM_BEGIN) + len(_PEM_BEGIN)
        der = binascii.a2b_base64(pem[begin : pem.index(_PEM_END, begin)])
        _, cert_start, _ = _der_element(der, 0)
        _, tbs_start, tbs_end = _der_element(der, cert_start)
        offset = tbs_start
        tag, _, end = _der_element(der, offset)
        if tag == 0xA0:  # [0] version, present from v2 on
            offset = end
        for _ in range(3):  # serialNumber, signature, issuer
            _, _, offset = _der_element(der, offset)
        tag, validity_start, _ = _der_element(der, offset)
        if tag != 0x30 or offset >= tbs_end:
            msg = "no validity"
            raise ValueError(msg)
        _, _, not_after_offset = _der_element(der, validity_start)  # skip notBefore
        tag, start, end = _der_element(der, not_after_offset)
        return _der_time(tag, der[start:end])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        msg = f"the device certificate {cert_path} is not a readable PEM certificate"
        raise RenewalFailed(msg) from exc


def needs_renewal(cert_path: Path, now: datetime, renew_before: timedelta) -> bool:
    """Whether the certificate in ``cert_path`` expires within ``renew_before`` of ``now``.

    Args:
        cert_path: The device certificate (PEM).
        now: The current time (timezone-aware).
        renew_before: How long before its expiry a certificate is renewed.

    Returns:
        ``True`` from ``not_after - renew_before`` on (an expired certificate included).

    Raises:
        RenewalFailed: when the certificate cannot be read.
    """
    return now >= certificate_not_after(cert_path) - renew_before


# --- one renewal --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RenewalRequest:
    new_key: ec.EllipticCurvePrivateKey
    body: dict[str, str]


def _prepare(files: IdentityFiles) -> _RenewalRequest:
    """A new key, its CSR, and the current key's proof over the CSR (blocking)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.x509.oid import NameOID

    try:
        current_cert_pem = files.cert_file.read_text()
        current_key = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
    except OSError as exc:
        msg = f"cannot read the current device key or certificate: {exc.strerror or exc}"
        raise RenewalFailed(msg) from exc
    except (ValueError, TypeError) as exc:
        msg = f"the current device key {files.key_file} is unreadable"
        raise RenewalFailed(msg) from exc
    new_key = ec.generate_private_key(ec.SECP256R1())
    # The CA sets the real subject (CN = the current certificate's CN).
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldlink-renewal")]))
        .sign(new_key, hashes.SHA256())
    )
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    if isinstance(current_key, ec.EllipticCurvePrivateKey):
        signature = current_key.sign(csr_der, ec.ECDSA(hashes.SHA256()))
    elif isinstance(current_key, rsa.RSAPrivateKey):
        signature = current_key.sign(csr_der, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(current_key, ed25519.Ed25519PrivateKey):
        signature = current_key.sign(csr_der)
    else:
        msg = f"the current device key {files.key_file} is of a type renewal does not support"
        raise RenewalFailed(msg)
    proof = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
    body = {
        "cert_pem": current_cert_pem,
        "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "proof": proof,
    }
    return _RenewalRequest(new_key=new_key, body=body)


def _renew_url(server_url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"[agent] server_url must be an http(s):// URL, not {server_url!r}"
        raise RenewalFailed(msg)
    return server_url.rstrip("/") + RENEW_PATH


def _post_renewal(
    url: str, body: dict[str, str], ca_file: Path, timeout_s: float
) -> dict[str, Any]:
    """POST the renewal (blocking; run in a thread)."""
    from agent.identity.http import post_json

    return post_json(
        url,
        body,
        ca_file=ca_file,
        timeout_s=timeout_s,
        action="certificate renewal",
        failure=RenewalFailed,
    )


def _load_ca_bundle(ca_file: Path) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(ca_file.read_bytes())
    except OSError as exc:
        msg = f"cannot read the device CA {ca_file}: {exc.strerror or exc}"
        raise RenewalFailed(msg) from exc
    except ValueError as exc:
        msg = f"the device CA {ca_file} holds no readable certificate"
        raise RenewalFailed(msg) from exc


def _check_answer(
    data: dict[str, Any], request: _RenewalRequest, device_id: str, ca_file: Path
) -> x509.Certificate:
    """The renewed certificate, once it is checked to be ours (blocking: reads ``ca_file``)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    from agent.identity.enroll import certificate_mismatch

    missing = [name for name in _RESPONSE_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        msg = f"the server's renewal answer lacks {', '.join(missing)}"
        raise RenewalFailed(msg)
    if data["device_id"] != device_id:
        msg = f"the server renewed device {data['device_id']!r}, not this device {device_id!r}"
        raise RenewalFailed(msg)
    try:
        cert = x509.load_pem_x509_certificate(data["cert_pem"].encode())
    except ValueError as exc:
        msg = "the server's renewed certificate is unreadable"
        raise RenewalFailed(msg) from exc
    mismatch = certificate_mismatch(cert, request.new_key, device_id)
    if mismatch == "key":
        msg = "the server returned a certificate for another key"
        raise RenewalFailed(msg)
    if mismatch == "name":
        msg = "the renewed certificate's name is not this device's id"
        raise RenewalFailed(msg)
    for ca in _load_ca_bundle(ca_file):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        break
    else:
        msg = f"the renewed certificate is not issued by the device CA in {ca_file}"
        raise RenewalFailed(msg)
    now = utcnow()
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        msg = "the renewed certificate is not valid now"
        raise RenewalFailed(msg)
    return cert


def restore_previous(files: IdentityFiles) -> bool:
    """Put the kept ``*.prev`` pair back in place (blocking); whether there was one."""
    restored = False
    for previous, live in (
        (files.previous_key_file, files.key_file),
        (files.previous_cert_file, files.cert_file),
    ):
        if previous.exists():
            os.replace(previous, live)
            restored = True
    return restored


def discard_previous(files: IdentityFiles) -> None:
    """Delete the kept ``*.prev`` pair: the new one has connected (blocking)."""
    files.previous_key_file.unlink(missing_ok=True)
    files.previous_cert_file.unlink(missing_ok=True)


def _install(files: IdentityFiles, key_pem: bytes, cert_pem: bytes) -> None:
    """Keep the working pair as ``*.prev``, then put the new pair in its place (blocking)."""
    from shared.signing import write_file_atomic

    # Copies, not renames: the live files never go missing, even for an instant.
    write_file_atomic(files.previous_key_file, files.key_file.read_bytes(), mode=0o600)
    write_file_atomic(files.previous_cert_file, files.cert_file.read_bytes(), mode=0o644)
    try:
        write_file_atomic(files.key_file, key_pem, mode=0o600)
        write_file_atomic(files.cert_file, cert_pem, mode=0o644)
    except BaseException:
        restore_previous(files)
        raise


async def renew_certificate(
    settings: AgentSettings, *, http_timeout_s: float = 30.0
) -> RenewalOutcome:
    """Renew this device's certificate once, and install the new pair.

    Makes a new key and a CSR, proves the current key over the CSR, posts both
    with the current certificate to ``{server_url}/api/v1/renew`` (an https
    server is verified with ``ca_file``), checks the answer and writes the new
    pair in place, keeping the working one as ``*.prev`` (see :func:`discard_previous`
    and :func:`restore_previous`).

    Args:
        settings: The agent's configuration (``server_url``, ``ca_file``,
            ``cert_file`` and ``key_file`` are needed).
        http_timeout_s: Seconds to wait for the server's answer.

    Returns:
        What was installed.

    Raises:
        RenewalFailed: renewal is not configured, the server refused it (its
            ``detail`` in one line), or its answer cannot be trusted.
        UnavailableError: the server cannot be reached (worth retrying).
    """
    files = IdentityFiles.from_settings(settings)
    if files is None or settings.server_url is None:
        msg = "certificate renewal needs server_url, ca_file, cert_file and key_file in [agent]"
        raise RenewalFailed(msg)
    url = _renew_url(settings.server_url)
    request = await asyncio.to_thread(_prepare, files)
    data = await asyncio.to_thread(_post_renewal, url, request.body, files.ca_file, http_timeout_s)
    cert = await asyncio.to_thread(_check_answer, data, request, settings.device_id, files.ca_file)

    from cryptography.hazmat.primitives import serialization

    key_pem = request.new_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    try:
        await asyncio.to_thread(_install, files, key_pem, cert_pem)
    except OSError as exc:
        reason = exc.strerror or exc
        msg = f"cannot write the renewed certificate next to {files.cert_file}: {reason}"
        raise RenewalFailed(msg) from exc
    return RenewalOutcome(
        device_id=settings.device_id,
        serial_hex=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc,
        files=files,
    )


def recover_interrupted_renewal(settings: AgentSettings) -> bool:
    """Put the previous pair back if a renewal was cut short between its two renames.

    Called before the TLS context is built at start (blocking, small files).
    A lone ``*.prev`` (cut short while the copies were made) is deleted: the
    live pair was not touched yet. A complete ``*.prev`` pair with a live pair
    that still fits together is left for the renewer to confirm or roll back.

    Returns:
        Whether the previous pair was put back.
    """
    files = IdentityFiles.from_settings(settings)
    if files is None:
        return False
    has_key, has_cert = files.previous_key_file.exists(), files.previous_cert_file.exists()
    if not (has_key and has_cert):
        if has_key or has_cert:
            discard_previous(files)
        return False
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(files.cert_file, files.key_file)
    except (OSError, ssl.SSLError):
        restore_previous(files)
        logger.warning(
            "the certificate and key in %s do not fit together after an interrupted renewal; "
            "the previous pair is back in place",
            files.cert_file.parent,
        )
        return True
    return False
