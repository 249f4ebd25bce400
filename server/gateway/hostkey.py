"""The gateway's own SSH host key: made once, kept in the state folder.

``state_dir/ssh_gateway_ed25519_key`` (mode 0600) and its ``.pub`` next to
it. Operators check its fingerprint the first time they connect (the server
logs it at start; ``ssh-keygen -lf`` on the ``.pub`` shows it too).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Final

import asyncssh

from shared.errors import ConfigError
from shared.ids import new_id

logger = logging.getLogger(__name__)

HOST_KEY_FILE: Final = "ssh_gateway_ed25519_key"


def host_key_path(state_dir: Path) -> Path:
    """Where the gateway's host key lives."""
    return state_dir / HOST_KEY_FILE


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """The gateway's host key, made on first use.

    Two server processes starting together make one key: each writes its
    own to a temporary file and links it into place; the loser reads the
    winner's.

    Raises:
        ConfigError: The key file exists but cannot be read.
    """
    path = host_key_path(state_dir)
    if not path.exists():
        _create(path)
    try:
        key = asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        msg = f"cannot read the SSH gateway's host key {path}: {exc}"
        raise ConfigError(msg) from exc
    if path.stat().st_mode & 0o077:
        logger.warning("the SSH gateway's host key %s is readable by others: chmod 600 it", path)
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="fieldlink-gateway")
    temporary = path.with_name(f".{path.name}.{new_id()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.export_private_key("openssh"))
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process made it first
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.export_public_key("openssh"))
    logger.info("made the SSH gateway's host key %s", path)
