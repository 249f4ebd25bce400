"""SSH host keys for devices that have no enrollment: simulated fleets and the demo.

An enrolled agent makes its host key at enrollment (``fieldlink agent
enroll``). A simulated fleet has one key per simulated device instead, in one
folder, made here when missing; the demo registers their public halves with
the server so that sessions to simulated devices authenticate like real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.errors import ConfigError


def ensure_host_keys(directory: Path, ids: Sequence[str]) -> int:
    """Make an ed25519 SSH host key for each device that has none; how many were made.

    Writes ``directory/<id>`` (OpenSSH private key, 0600) and ``directory/<id>.pub``.

    Raises:
        ConfigError: when the directory or a key cannot be written.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from shared.signing import write_file_atomic

    made = 0
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for device_id in ids:
            private_path = directory / device_id
            public_path = directory / f"{device_id}.pub"
            if private_path.exists() and public_path.exists():
                continue
            key = ed25519.Ed25519PrivateKey.generate()
            private = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            write_file_atomic(private_path, private, mode=0o600)
            write_file_atomic(public_path, public + f" {device_id}\n".encode(), mode=0o644)
            made += 1
    except OSError as exc:
        msg = f"--host-key-dir: cannot write host keys in {directory}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    return made


def read_public_key(directory: Path, device_id: str) -> str:
    """The OpenSSH public line of a device's host key in ``directory``."""
    return (directory / f"{device_id}.pub").read_text(encoding="utf-8").strip()
