"""Ed25519 signing and verification of server commands.

The server signs every command with its Ed25519 command key over
:func:`shared.wire.canonical_json` of every field but ``sig``; the agent
verifies it with the public key it pinned at enrollment. The signature is
base64url without padding, in ``sig``.

Verification works on the JSON object as it arrived (not on a re-serialised
model), so the signature covers exactly the bytes' meaning the server sent,
extra fields included. A command is refused, each time with its own
:class:`~shared.command_rules.CommandRejected` subclass and ``reason``, when it is:

* ``malformed``: not a command at all;
* ``unsigned``: no ``sig``;
* ``bad_signature``: a signature that does not verify (forged or tampered);
* ``foreign``: meant for another device (or for no device in particular);
* ``bad_lifetime``: expires before it was issued, or lives longer than allowed;
* ``not_yet_valid``: issued further in the future than the clock-skew allowance;
* ``expired``: ``expires_at`` is past (beyond the allowance);
* ``replayed``: its id was seen before and it has not expired yet.

Verification needs neither pydantic nor :mod:`shared.models`: the command's
shape is checked here with the standard library, against the same names and
limits of :mod:`shared.wire` that :class:`shared.models.Command` is built from
(the agent, which verifies, keeps pydantic out of its memory). The signature
is checked with the system's ``libcrypto``, which the ``ssl`` module has
already mapped (:mod:`shared.openssl_ed25519`), when the key is given as PEM;
``cryptography`` (its Ed25519 primitives only, imported inside the functions
that need them) when that library cannot be used or the key is given loaded.
Measured on this project's machines (Python 3.11, cryptography 50): the first
check through libcrypto adds about 1.3 MiB resident (ctypes); through
cryptography about 7 MiB and 25 ms, once; pydantic with :mod:`shared.models`
would add about 19 MiB and 160 ms more.

The key files are :mod:`shared.keyfiles`, the replay cache
:mod:`shared.replay`, the refusals :mod:`shared.command_rules`; their names are
importable from here too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from shared import fields, openssl_ed25519
from shared.command_rules import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_LIFETIME,
    BadLifetime,
    BadSignature,
    CommandRejected,
    ExpiredCommand,
    ForeignCommand,
    MalformedCommand,
    NotYetValidCommand,
    ReplayedCommand,
    UnsignedCommand,
)
from shared.fields import InvalidField
from shared.ids import isoformat_z, utcnow
from shared.keyfiles import (
    KeyFileError,
    generate_command_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    raw_ed25519_public_key,
    read_pinned_key,
    read_private_key,
    read_public_key,
    write_file_atomic,
    write_private_key,
)
from shared.replay import DEFAULT_REPLAY_CACHE_SIZE, ReplayCache
from shared.wire import (
    DEVICE_ID_PATTERN,
    MAX_COMMAND_ID_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_TYPE_LENGTH,
    MIN_COMMAND_ID_LENGTH,
    PROTOCOL_VERSION,
    TYPE_PATTERN,
    canonical_json,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from shared.models import Command

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_MAX_LIFETIME",
    "DEFAULT_REPLAY_CACHE_SIZE",
    "BadLifetime",
    "BadSignature",
    "CommandRejected",
    "ExpiredCommand",
    "ForeignCommand",
    "KeyFileError",
    "MalformedCommand",
    "NotYetValidCommand",
    "ReplayCache",
    "ReplayedCommand",
    "UnsignedCommand",
    "VerifiedCommand",
    "generate_command_key",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "read_pinned_key",
    "read_private_key",
    "read_public_key",
    "sign_command",
    "signed_payload",
    "verify_command",
    "write_file_atomic",
    "write_private_key",
]

# 64 bytes of Ed25519 signature are 86 base64url characters without padding.
_SIG_RE: Final = re.compile(r"[A-Za-z0-9_-]{86}")


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command that passed :func:`verify_command` (the fields of :class:`shared.models.Command`).

    Attributes:
        id: The command's id.
        type: Its type, e.g. ``session.open``.
        issued_at: When the server issued it (aware).
        expires_at: When it expires (aware).
        device_id: The device it is for.
        body: Its body, as sent.
        sig: Its signature.
    """

    id: str
    type: str
    issued_at: datetime
    expires_at: datetime
    device_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    sig: str = ""


# --- signing ------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_signature(text: str) -> bytes | None:
    """Decode a signature strictly: exactly one encoding of 64 bytes is accepted."""
    if _SIG_RE.fullmatch(text) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    # Characters whose unused low bits differ decode alike; accept only the canonical one.
    return raw if len(raw) == 64 and _b64url(raw) == text else None


def signed_payload(data: dict[str, Any]) -> bytes:
    """The bytes a command's signature covers: canonical JSON of every field but ``sig``."""
    return canonical_json({key: value for key, value in data.items() if key != "sig"})


def sign_command(private_key: Ed25519PrivateKey, command: Command) -> Command:
    """Sign a command with the server's command key.

    Args:
        private_key: The Ed25519 command-signing key.
        command: The command; it must name the device it is for (``device_id``).

    Returns:
        A copy of ``command`` with ``sig`` set. Publish it with
        :func:`shared.models.dump_message`.

    Raises:
        ValueError: when the command names no device (agents refuse such commands).
    """
    if command.device_id is None:
        msg = "a command must name its device_id before it is signed"
        raise ValueError(msg)
    unsigned = command.model_copy(update={"sig": ""})
    data = json.loads(unsigned.model_dump_json(exclude_none=True))
    signature = private_key.sign(signed_payload(data))
    return command.model_copy(update={"sig": _b64url(signature)})


# --- the command's shape, without pydantic ------------------------------------------------


def _command_fields(data: dict[str, Any]) -> VerifiedCommand:
    """The fields of a command object, checked as :class:`shared.models.Command` checks them."""
    version = data.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise InvalidField(where="v", message=f"Input should be {PROTOCOL_VERSION}")
    return VerifiedCommand(
        id=fields.string(
            data, "id", min_length=MIN_COMMAND_ID_LENGTH, max_length=MAX_COMMAND_ID_LENGTH
        ),
        type=fields.string(
            data, "type", min_length=1, max_length=MAX_TYPE_LENGTH, pattern=TYPE_PATTERN
        ),
        issued_at=fields.aware_datetime(data, "issued_at"),
        expires_at=fields.aware_datetime(data, "expires_at"),
        device_id=fields.optional_string(data, "device_id", pattern=DEVICE_ID_PATTERN),
        body=fields.dictionary(data, "body"),
        sig=fields.string(data, "sig", default=""),
    )


def _parse_wire(
    payload: bytes | bytearray | str | Command,
) -> tuple[dict[str, Any], VerifiedCommand]:
    if not isinstance(payload, bytes | bytearray | str):
        # A parsed shared.models.Command (the server's tests): its JSON, as it would be sent.
        data = json.loads(payload.model_dump_json(exclude_none=True))
    else:
        if len(payload) > MAX_PAYLOAD_BYTES:
            msg = f"command payload of {len(payload)} bytes is over the limit"
            raise MalformedCommand(msg)
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            msg = "command payload is not valid UTF-8 JSON"
            raise MalformedCommand(msg) from exc
    if not isinstance(data, dict):
        msg = "command payload is not a JSON object"
        raise MalformedCommand(msg)
    try:
        return data, _command_fields(data)
    except InvalidField as exc:
        command_id = data.get("id") if isinstance(data.get("id"), str) else None
        msg = f"not a valid command: {exc}"
        raise MalformedCommand(msg, command_id=command_id) from exc


# --- verification -------------------------------------------------------------------------


def _verification_key(public_key: bytes | str | Ed25519PublicKey) -> bytes | Ed25519PublicKey:
    """The raw 32 bytes of a PEM Ed25519 key, or else the key as cryptography loads it."""
    if isinstance(public_key, bytes | str):
        raw = raw_ed25519_public_key(public_key)
        if raw is not None:
            return raw
    return load_public_key(public_key)


def _signature_verifies(key: bytes | Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Check with the libcrypto the ssl module mapped, else with cryptography."""
    if isinstance(key, bytes):
        verdict = openssl_ed25519.verify(key, signature, message)
        if verdict is not None:
            return verdict
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = Ed25519PublicKey.from_public_bytes(key)
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def verify_command(
    public_key: bytes | str | Ed25519PublicKey,
    payload: bytes | bytearray | str | Command,
    device_id: str,
    replay_cache: ReplayCache,
    now: datetime | None = None,
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
) -> VerifiedCommand:
    """Verify a command received by ``device_id`` and record it against replays.

    The checks run in this order, and the first that fails raises: shape,
    signature presence, signature, device, lifetime, issue time, expiry, replay.
    Only a command that passes all of them enters the replay cache.

    Args:
        public_key: The pinned command key (PEM or a loaded key).
        payload: The command as received (bytes from MQTT), or a parsed command.
        device_id: The id of the device verifying it.
        replay_cache: The device's cache of accepted command ids.
        now: The current time (default: now, UTC).
        clock_skew: How far the clocks may disagree: a command expired by less,
            or issued in the future by less, is still accepted.
        max_lifetime: The longest ``expires_at - issued_at`` accepted.

    Returns:
        The verified command.

    Raises:
        CommandRejected: a subclass per reason (see the module docstring).
        KeyFileError: when ``public_key`` is not an Ed25519 public key.
    """
    key = _verification_key(public_key)
    now = now or utcnow()
    data, command = _parse_wire(payload)
    if not command.sig:
        msg = f"command {command.id} is not signed"
        raise UnsignedCommand(msg, command_id=command.id)
    signature = _b64url_signature(command.sig)
    if signature is None:
        msg = f"command {command.id} has a malformed signature"
        raise BadSignature(msg, command_id=command.id)
    if not _signature_verifies(key, signature, signed_payload(data)):
        msg = f"command {command.id} has a bad signature"
        raise BadSignature(msg, command_id=command.id)
    if command.device_id != device_id:
        target = command.device_id or "no device"
        msg = f"command {command.id} is for {target}, not {device_id}"
        raise ForeignCommand(msg, command_id=command.id)
    if command.expires_at <= command.issued_at:
        msg = f"command {command.id} expires before it is issued"
        raise BadLifetime(msg, command_id=command.id)
    if command.expires_at - command.issued_at > max_lifetime:
        msg = f"command {command.id} claims a lifetime over {max_lifetime}"
        raise BadLifetime(msg, command_id=command.id)
    if command.issued_at > now + clock_skew:
        msg = f"command {command.id} is issued in the future ({isoformat_z(command.issued_at)})"
        raise NotYetValidCommand(msg, command_id=command.id)
    if command.expires_at + clock_skew <= now:
        msg = f"command {command.id} expired at {isoformat_z(command.expires_at)}"
        raise ExpiredCommand(msg, command_id=command.id)
    replay_cache.check_and_add(
        command.id,
        command.expires_at,
        now,
        keep_after_expiry=clock_skew,
        issued_at=command.issued_at,
    )
    return command
