"""The command-signing key files: Ed25519 keys in PEM, and atomic writes of key material.

The center makes the command key (``fieldlink ca init``) and pins its public
half on each device at enrollment; the agent reads the pinned key to verify
commands. ``cryptography`` is imported inside the functions that need it. A
pinned public key in the usual SubjectPublicKeyInfo PEM is read without
cryptography's serialization modules (:func:`raw_ed25519_public_key`,
:func:`read_pinned_key`: the agent verifies commands without loading
cryptography at all, see :mod:`shared.openssl_ed25519`); anything else goes
through cryptography's PEM parser, which gives the errors.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from shared.errors import FieldlinkError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

_T = TypeVar("_T")

# An Ed25519 SubjectPublicKeyInfo (RFC 8410) is this DER prefix and the 32-byte key.
_ED25519_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_PUBLIC_PEM_RE: Final = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----"
)


class KeyFileError(FieldlinkError):
    """A command-signing key file is missing, unreadable or not the right kind of key."""


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
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(data, Ed25519PublicKey):
        return data
    raw = data.encode() if isinstance(data, str) else data
    raw_key = raw_ed25519_public_key(raw)
    if raw_key is not None:
        return Ed25519PublicKey.from_public_bytes(raw_key)
    from cryptography.hazmat.primitives import serialization

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
    return _read_key_file(path, "command-signing key", load_private_key)


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file.

    Raises:
        KeyFileError: naming the file when it is missing, unreadable or the wrong key.
    """
    return _read_key_file(path, "command public key", load_public_key)


def read_pinned_key(path: Path) -> bytes | Ed25519PublicKey:
    """Read the pinned command key for :func:`shared.signing.verify_command`.

    Returns:
        The PEM bytes of an Ed25519 key, checked without cryptography (the agent
        then verifies without loading it), or the key as :func:`read_public_key`
        loads any other PEM form.

    Raises:
        KeyFileError: naming the file when it is missing, unreadable or the wrong key.
    """

    def pinned(data: bytes) -> bytes | Ed25519PublicKey:
        return data if raw_ed25519_public_key(data) is not None else load_public_key(data)

    return _read_key_file(path, "command public key", pinned)


def _read_key_file(path: Path, what: str, load: Callable[[bytes], _T]) -> _T:
    """Read ``path`` and ``load`` its bytes; a KeyFileError names the file either way."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read {what} {path}: {exc.strerror}"
        raise KeyFileError(msg) from exc
    try:
        return load(data)
    except KeyFileError as exc:
        msg = f"{path}: {exc}"
        raise KeyFileError(msg) from exc


def write_private_key(path: Path, private_key: Ed25519PrivateKey) -> None:
    """Write a private key as PEM, mode 0600 from its first byte, atomically."""
    write_file_atomic(path, private_key_pem(private_key), mode=0o600)


def create_key_file(path: Path, make: Callable[[], bytes]) -> None:
    """Make a missing secret key file once: ``make()``'s bytes, mode 0600 from the start.

    An existing file is left as it is; when two processes race to make it, the first
    one's key stays (the file is opened with ``O_EXCL``). The caller reads it.

    Args:
        path: The key file (its folder is made when missing).
        make: Makes the new key's content.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first
    with os.fdopen(fd, "wb") as out:
        out.write(make())


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


def raw_ed25519_public_key(data: bytes | str) -> bytes | None:
    """The 32 raw bytes of a PEM Ed25519 public key, read without cryptography.

    Returns:
        The key's bytes, or ``None`` for anything but one SubjectPublicKeyInfo PEM
        block of an Ed25519 key (then :func:`load_public_key` reads it, or says why not).
    """
    if isinstance(data, str):
        data = data.encode()
    found = _PUBLIC_PEM_RE.fullmatch(data.strip())
    if found is None:
        return None
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        return None
    return der[len(_ED25519_SPKI_PREFIX) :]
