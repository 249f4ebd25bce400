"""Ed25519 signing and verification of server commands.

The server signs every command with its Ed25519 command key over
:func:`shared.models.canonical_json` of every field but ``sig``; the agent
verifies it with the public key it pinned at enrollment. The signature is
base64url without padding, in ``sig``.

Verification works on the JSON object as it arrived (not on a re-serialised
model), so the signature covers exactly the bytes' meaning the server sent,
extra fields included. A command is refused, each time with its own
:class:`CommandRejected` subclass and ``reason``, when it is:

* ``malformed``: not a command at all;
* ``unsigned``: no ``sig``;
* ``bad_signature``: a signature that does not verify (forged or tampered);
* ``foreign``: meant for another device (or for no device in particular);
* ``bad_lifetime``: expires before it was issued, or lives longer than allowed;
* ``not_yet_valid``: issued further in the future than the clock-skew allowance;
* ``expired``: ``expires_at`` is past (beyond the allowance);
* ``replayed``: its id was seen before and it has not expired yet.

``cryptography`` and the pydantic models of :mod:`shared.models` are
imported inside the functions that need them: importing this module (for the
replay cache or key files) costs next to nothing, and an agent that receives
no command never loads either. Measured on this project's machines (Python
3.11, cryptography 50): the Ed25519 primitives add about 15 ms and 7.5 MiB
resident, once; :mod:`shared.models` with pydantic about 12 MiB more.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shared.errors import FieldlinkError, SignatureError
from shared.ids import isoformat_z, utcnow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from shared.models import Command

logger = logging.getLogger(__name__)

#: How far the device clock may be off from the server's before times are refused.
DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=60)
#: Longest lifetime (``expires_at - issued_at``) a command may claim.
DEFAULT_MAX_LIFETIME: Final = timedelta(hours=24)
#: Ids the replay cache holds at most.
DEFAULT_REPLAY_CACHE_SIZE: Final = 10_000
# 64 bytes of Ed25519 signature are 86 base64url characters without padding.
_SIG_RE: Final = re.compile(r"[A-Za-z0-9_-]{86}")


class CommandRejected(SignatureError):
    """A command was refused; ``reason`` is a short, stable label for metrics and results.

    Attributes:
        reason: One of ``malformed``, ``unsigned``, ``bad_signature``, ``foreign``,
            ``bad_lifetime``, ``not_yet_valid``, ``expired``, ``replayed``.
        command_id: The command's id when it could be read, for the refusal report.
    """

    reason: ClassVar[str] = "rejected"

    def __init__(self, message: str, *, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class MalformedCommand(CommandRejected):
    """The payload is not a command (not JSON, wrong shape, too large)."""

    reason = "malformed"


class UnsignedCommand(CommandRejected):
    """The command carries no signature."""

    reason = "unsigned"


class BadSignature(CommandRejected):
    """The signature does not verify: forged, tampered with, or signed by another key."""

    reason = "bad_signature"


class ForeignCommand(CommandRejected):
    """The command names another device, or none."""

    reason = "foreign"


class BadLifetime(CommandRejected):
    """The command expires before it is issued, or claims a lifetime longer than allowed."""

    reason = "bad_lifetime"


class NotYetValidCommand(CommandRejected):
    """The command was issued further in the future than the clock-skew allowance."""

    reason = "not_yet_valid"


class ExpiredCommand(CommandRejected):
    """The command's ``expires_at`` has passed."""

    reason = "expired"


class ReplayedCommand(CommandRejected):
    """The command's id was seen before (or is older than what the bounded cache forgot)."""

    reason = "replayed"


class KeyFileError(FieldlinkError):
    """A command-signing key file is missing, unreadable or not the right kind of key."""


# --- keys ---------------------------------------------------------------------------------


def generate_command_key() -> Ed25519PrivateKey:
    """Make a new Ed25519 command-signing key.

    Returns:
        The private key; its ``public_key()`` is what agents pin.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """Serialise a command-signing private key as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Serialise the public half of a command-signing key as SubjectPublicKeyInfo PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(data: bytes | str) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PEM.

    Raises:
        KeyFileError: when it is not an unencrypted Ed25519 private key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        msg = "not an unencrypted PEM private key"
        raise KeyFileError(msg) from exc
    if not isinstance(key, Ed25519PrivateKey):
        msg = "the command-signing key must be an Ed25519 key"
        raise KeyFileError(msg)
    return key


def load_public_key(data: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM (a key object is returned as it is).

    Raises:
        KeyFileError: when it is not an Ed25519 public key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(data, Ed25519PublicKey):
        return data
    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError as exc:
        msg = "not a PEM public key"
        raise KeyFileError(msg) from exc
    if not isinstance(key, Ed25519PublicKey):
        msg = "the pinned command key must be an Ed25519 public key"
        raise KeyFileError(msg)
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file.

    Raises:
        KeyFileError: naming the file when it is missing, unreadable or the wrong key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read command-signing key {path}: {exc.strerror}"
        raise KeyFileError(msg) from exc
    try:
        return load_private_key(data)
    except KeyFileError as exc:
        msg = f"{path}: {exc}"
        raise KeyFileError(msg) from exc


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file.

    Raises:
        KeyFileError: naming the file when it is missing, unreadable or the wrong key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read command public key {path}: {exc.strerror}"
        raise KeyFileError(msg) from exc
    try:
        return load_public_key(data)
    except KeyFileError as exc:
        msg = f"{path}: {exc}"
        raise KeyFileError(msg) from exc


def write_private_key(path: Path, private_key: Ed25519PrivateKey) -> None:
    """Write a private key as PEM, mode 0600 from its first byte, atomically."""
    write_file_atomic(path, private_key_pem(private_key), mode=0o600)


def write_file_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The temporary file is created 0600 (``mkstemp``), so a secret is never
    readable by others, not even for an instant; it is given ``mode``, flushed
    to disk, and renamed over ``path``.

    Args:
        path: The file to (re)place.
        data: Its new content.
        mode: Its permission bits, e.g. ``0o600`` for keys, ``0o644`` for certificates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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
    from shared.models import canonical_json

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


# --- replay cache -------------------------------------------------------------------------


class ReplayCache:
    """Ids of commands already accepted, each kept until its command expires.

    Bounded: when full, it forgets the ids that expire soonest, and from then
    on refuses any command that expires no later than the latest one it forgot
    (``floor``), so forgetting never reopens a replay window. Commands expire
    later as time goes on, so fresh commands are not affected.

    With ``path``, the cache is kept in a small JSON file (rewritten
    atomically on each accepted command), so an agent restart does not reopen
    a replay window either.

    Args:
        path: The file to persist to, or ``None`` to keep it in memory only.
        max_entries: How many ids to hold at most.
    """

    def __init__(self, path: Path | None = None, max_entries: int = DEFAULT_REPLAY_CACHE_SIZE):
        if max_entries < 1:
            msg = "max_entries must be at least 1"
            raise ValueError(msg)
        self.path = path
        self.max_entries = max_entries
        self._expiry: dict[str, datetime] = {}
        self.floor: datetime | None = None
        #: Set when a persisted cache was lost: commands issued before it are refused.
        self.not_issued_before: datetime | None = None
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._expiry

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {key: datetime.fromisoformat(value) for key, value in data["ids"].items()}
            floor = datetime.fromisoformat(data["floor"]) if data.get("floor") else None
            cutoff = data.get("not_issued_before")
            not_issued_before = datetime.fromisoformat(cutoff) if cutoff else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged cache must not silently reopen the replay window: refuse
            # every command issued before now, then start afresh.
            logger.warning("replay cache %s unreadable (%s); refusing older commands", path, exc)
            self.not_issued_before = utcnow()
            return
        self._expiry = entries
        self.floor = floor
        self.not_issued_before = not_issued_before
        self.prune(utcnow())

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "floor": isoformat_z(self.floor) if self.floor else None,
            "not_issued_before": (
                isoformat_z(self.not_issued_before) if self.not_issued_before else None
            ),
            "ids": {key: isoformat_z(value) for key, value in self._expiry.items()},
        }
        write_file_atomic(self.path, json.dumps(data).encode(), mode=0o600)

    def prune(self, now: datetime) -> None:
        """Forget the ids whose commands have expired by ``now``."""
        self._expiry = {key: value for key, value in self._expiry.items() if value > now}

    def check_and_add(
        self,
        command_id: str,
        expires_at: datetime,
        now: datetime,
        keep_after_expiry: timedelta = DEFAULT_CLOCK_SKEW,
        issued_at: datetime | None = None,
    ) -> None:
        """Record a command id, or refuse it as a replay.

        Args:
            command_id: The command's id.
            expires_at: When it expires; it is remembered until then plus ``keep_after_expiry``.
            now: The current time.
            keep_after_expiry: The clock-skew allowance verification grants after expiry.
            issued_at: When it was issued (checked against :attr:`not_issued_before`).

        Raises:
            ReplayedCommand: when the id was seen before, or expires no later
                than an id the bounded cache had to forget.
        """
        keep_until = expires_at + keep_after_expiry
        with self._lock:
            if command_id in self._expiry and self._expiry[command_id] > now:
                msg = f"command {command_id} was already received"
                raise ReplayedCommand(msg, command_id=command_id)
            if self.floor is not None and keep_until <= self.floor:
                msg = f"command {command_id} is older than the replay cache remembers"
                raise ReplayedCommand(msg, command_id=command_id)
            if (
                self.not_issued_before is not None
                and issued_at is not None
                and issued_at < self.not_issued_before
            ):
                msg = f"command {command_id} predates a lost replay cache"
                raise ReplayedCommand(msg, command_id=command_id)
            if len(self._expiry) >= self.max_entries:
                self.prune(now)
            while len(self._expiry) >= self.max_entries:
                oldest = min(self._expiry, key=self._expiry.__getitem__)
                forgotten = self._expiry.pop(oldest)
                self.floor = forgotten if self.floor is None else max(self.floor, forgotten)
            self._expiry[command_id] = keep_until
            self._save()


# --- verification -------------------------------------------------------------------------


def _parse_wire(payload: bytes | bytearray | str | Command) -> tuple[dict[str, Any], Command]:
    from pydantic import ValidationError

    from shared.models import Command
    from shared.wire import MAX_PAYLOAD_BYTES

    if isinstance(payload, Command):
        return json.loads(payload.model_dump_json(exclude_none=True)), payload
    if len(payload) > MAX_PAYLOAD_BYTES:
        msg = f"command payload of {len(payload)} bytes is over the limit"
        raise MalformedCommand(msg)
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = "command payload is not valid UTF-8 JSON"
        raise MalformedCommand(msg) from exc
    if not isinstance(data, dict):
        msg = "command payload is not a JSON object"
        raise MalformedCommand(msg)
    try:
        command = Command.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        command_id = data.get("id") if isinstance(data.get("id"), str) else None
        msg = f"not a valid command: {where}: {first['msg']}"
        raise MalformedCommand(msg, command_id=command_id) from exc
    return data, command


def verify_command(
    public_key: bytes | str | Ed25519PublicKey,
    payload: bytes | bytearray | str | Command,
    device_id: str,
    replay_cache: ReplayCache,
    now: datetime | None = None,
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
) -> Command:
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
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    now = now or utcnow()
    data, command = _parse_wire(payload)
    if not command.sig:
        msg = f"command {command.id} is not signed"
        raise UnsignedCommand(msg, command_id=command.id)
    signature = _b64url_signature(command.sig)
    if signature is None:
        msg = f"command {command.id} has a malformed signature"
        raise BadSignature(msg, command_id=command.id)
    try:
        key.verify(signature, signed_payload(data))
    except InvalidSignature as exc:
        msg = f"command {command.id} has a bad signature"
        raise BadSignature(msg, command_id=command.id) from exc
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
