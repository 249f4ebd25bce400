"""Device ids, random ids and the time helpers every part agrees on."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime

from shared.errors import InvalidDeviceId
from shared.wire import DEVICE_ID_PATTERN

_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_SLUG_DROP = re.compile(r"[^a-z0-9-]+")


def is_device_id(value: str) -> bool:
    """Tell whether ``value`` is a valid device id."""
    return _DEVICE_ID_RE.fullmatch(value) is not None


def check_device_id(value: str) -> str:
    """Return ``value`` if it is a valid device id.

    Raises:
        InvalidDeviceId: if it is not.
    """
    if not is_device_id(value):
        msg = (
            f"invalid device id {value!r}: use 1-63 of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
        raise InvalidDeviceId(msg)
    return value


def derive_device_id(device_type: str, serial: str) -> str:
    """Derive the default device id from its type and serial number.

    ``("mfp", "XK 0042/B")`` gives ``"mfp-xk-0042-b"``.
    """
    slug = _SLUG_DROP.sub("-", serial.strip().lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    return check_device_id(f"{device_type}-{slug}"[:63].rstrip("-"))


def new_id() -> str:
    """A random 128-bit id as 32 hex digits (session, command, incident ids)."""
    return uuid.uuid4().hex


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random secret (enrollment tokens, API tokens)."""
    return secrets.token_urlsafe(nbytes)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def isoformat_z(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``: ``2026-11-22T23:00:00.123Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
