"""Passwords (argon2) and bearer tokens (random, stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.ids import new_token

# A hash of a fixed throwaway password, verified against when the user does not
# exist, so that "no such user" and "wrong password" take the same time.
_DUMMY_PASSWORD = "fieldlink-timing-equaliser"  # noqa: S105


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(_DUMMY_PASSWORD)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check ``password`` against its hash in constant time; ``None`` still spends the time."""
    try:
        return (
            _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def new_bearer_token() -> tuple[str, str]:
    """A new bearer token and the hash to store: ``(token, token_hash)``."""
    token = "flk_" + new_token(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """SHA-256 hex of a token: tokens are 256-bit random, so no salt or stretching is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())
