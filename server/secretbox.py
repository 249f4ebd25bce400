"""Secrets kept in the database, encrypted at rest (Fernet) with the server's key file.

The key is ``mfa_key_file`` (default ``state_dir/mfa.key``), made at first use with
mode 0600 (:func:`shared.keyfiles.create_key_file`); every server process on one
database must have the same file. It encrypts TOTP secrets (:mod:`server.mfa`) and
the signing secrets of notification rules made over the API (:mod:`server.notify.store`).
Errors name the key file, never a secret.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from server.config import ServerSettings
from shared.keyfiles import create_key_file


class SecretKeyError(RuntimeError):
    """The key file is unreadable or does not decrypt a stored secret."""


def key_path(settings: ServerSettings) -> Path:
    """Where the key that encrypts stored secrets lives."""
    return settings.mfa_key_file or settings.state_dir / "mfa.key"


def _fernet(settings: ServerSettings) -> Fernet:
    path = key_path(settings)
    create_key_file(path, Fernet.generate_key)
    try:
        return Fernet(path.read_bytes().strip())
    except (OSError, ValueError) as exc:
        msg = f"cannot use the MFA key {path}: {exc}"
        raise SecretKeyError(msg) from exc


def encrypt(settings: ServerSettings, secret: str) -> str:
    """``secret`` encrypted with the key (a Fernet token, ASCII).

    Raises:
        SecretKeyError: the key file is unusable.
    """
    return _fernet(settings).encrypt(secret.encode()).decode()


def decrypt(settings: ServerSettings, stored: str) -> str:
    """What :func:`encrypt` gave ``stored`` for.

    Raises:
        SecretKeyError: the key file is unusable or is not the key ``stored`` was made with.
    """
    try:
        return _fernet(settings).decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        msg = f"the MFA key {key_path(settings)} does not decrypt a stored secret"
        raise SecretKeyError(msg) from exc
