"""The ledger that makes a session's one-time SSH client key single-use.

The signed ``session.open`` names the one client key the session accepts;
:class:`UsedClientKeys` remembers each key that has authenticated until it
expires, so that a replayed ``session.open`` naming it is refused
(:mod:`agent.remote.sshd` checks it before dialing and when the client
authenticates). Standard library only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from shared.ids import utcnow


class UsedClientKeys:
    """Fingerprints of one-time client keys already used, kept until they expire.

    One ledger per agent process (:data:`USED_CLIENT_KEYS`) makes a key
    single-use across sessions: a replayed ``session.open`` naming a key
    that has already authenticated is refused.
    """

    def __init__(self) -> None:
        self._used: dict[str, datetime] = {}

    def is_used(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` has already authenticated a session."""
        self._prune()
        return fingerprint in self._used

    def claim(self, fingerprint: str, expires_at: datetime) -> bool:
        """Record a first use; ``False`` if the key was used before.

        Args:
            fingerprint: The key's SHA256 fingerprint.
            expires_at: When the key expires (the record can go then).

        Returns:
            ``True`` for the first use.
        """
        if self.is_used(fingerprint):
            return False
        self._used[fingerprint] = expires_at
        return True

    def _prune(self) -> None:
        now = utcnow()
        for fingerprint in [fp for fp, expiry in self._used.items() if expiry <= now]:
            del self._used[fingerprint]


#: The agent process's ledger of used one-time keys.
USED_CLIENT_KEYS: Final = UsedClientKeys()
