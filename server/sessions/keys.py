"""One-time SSH keys and session tokens for remote sessions.

Each session gets a fresh Ed25519 key pair: the public half travels to the
agent in the signed ``session.open`` command, the private half stays in the
server process that waits for the agent's tunnel, and the agent accepts it
once. The session token (what the agent shows the tunnel endpoint) is stored
only as its SHA-256 and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

import asyncssh

from shared.errors import ProtocolError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    """A session's client key pair.

    Attributes:
        private_key: The key the server's SSH client signs with (never leaves the process).
        public_openssh: The public half, OpenSSH format, for ``session.open``.
        fingerprint: Its SHA256 fingerprint (safe to log and audit).
    """

    private_key: asyncssh.SSHKey
    public_openssh: str
    fingerprint: str


def generate_one_time_key() -> OneTimeKey:
    """Make a fresh Ed25519 client key for one session."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="fieldlink-session")
    public = key.export_public_key("openssh").decode().strip()
    return OneTimeKey(private_key=key, public_openssh=public, fingerprint=key.get_fingerprint())


def parse_host_key(openssh_public: str) -> asyncssh.SSHKey:
    """Parse the device's pinned host key (``Device.ssh_host_key``).

    Raises:
        ProtocolError: It is not an OpenSSH public key.
    """
    try:
        return asyncssh.import_public_key(openssh_public)
    except (asyncssh.KeyImportError, ValueError) as exc:
        msg = "the device's pinned SSH host key is malformed"
        raise ProtocolError(msg, reason="bad_host_key") from exc


def hash_session_token(token: str) -> str:
    """The stored form of a session token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def session_token_matches(token: str, token_hash: str) -> bool:
    """Whether ``token`` is the one ``token_hash`` was made from (constant time)."""
    return hmac.compare_digest(hash_session_token(token), token_hash)
