"""Survey links: unguessable one-time tokens, stored only as a hash.

A survey row keeps a random seed and the SHA-256 of its token; the token is
HMAC-SHA256(survey key, seed), so the server can show the link again (the
incident's ``survey_url``, a reminder) while the database alone never yields
one: the key lives in a file (``survey.key_file``, default
``state_dir/survey.key``, mode 0600), outside the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from server.security import hash_token, tokens_equal
from shared.keyfiles import create_key_file

_PURPOSE = b"fieldlink survey link v1:"
#: What a survey token looks like (43 characters of URL-safe base64, 256 bits).
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class SurveyKeyError(RuntimeError):
    """The survey key file cannot be read or made."""


def load_key(path: Path) -> bytes:
    """The survey key in ``path``, made (32 random bytes, mode 0600) when it is missing."""
    create_key_file(path, lambda: secrets.token_hex(32).encode())
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        msg = f"cannot read the survey key {path}: {exc}"
        raise SurveyKeyError(msg) from exc
    if len(key) < 32:
        msg = f"the survey key {path} is too short"
        raise SurveyKeyError(msg)
    return key


def new_seed() -> str:
    """A new random seed for a survey's token (stored with the survey)."""
    return secrets.token_hex(16)


def token_for(key: bytes, seed: str) -> str:
    """The survey link's token for ``seed``."""
    digest = hmac.new(key, _PURPOSE + seed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def well_formed(token: str) -> bool:
    """Whether ``token`` could be a survey token (checked before any database read)."""
    return bool(TOKEN_PATTERN.match(token))


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256 (hex)."""
    return hash_token(token)


def matches(token: str, stored_hash: str) -> bool:
    """Whether ``token`` is the one whose hash is stored (constant time)."""
    return tokens_equal(token_hash(token), stored_hash)
