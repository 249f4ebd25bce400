"""Checks of JSON fields with the standard library, for the messages the agent reads.

The server validates with the pydantic models of :mod:`shared.models`; the agent,
which keeps pydantic out of its memory, checks the few messages it reads (a
signed command, the bodies of ``session.open`` and ``session.close``) with
these, against the same names and limits of :mod:`shared.wire`. A failed check
raises :class:`InvalidField`, whose text is ``"<field>: <problem>"`` and never
carries the value.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any


class InvalidField(ValueError):
    """A field is missing or not what the message allows.

    Attributes:
        where: The field's name.
    """

    def __init__(self, *, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def string(
    data: dict[str, Any],
    name: str,
    *,
    default: str | None = None,
    min_length: int = 0,
    max_length: int | None = None,
    pattern: str | None = None,
) -> str:
    """A string field (``default`` when absent; required when ``default`` is ``None``)."""
    value = data.get(name, default)
    if value is None:
        raise InvalidField(where=name, message="Field required")
    return checked_string(value, name, min_length, max_length, pattern)


def checked_string(
    value: object,
    where: str,
    min_length: int = 0,
    max_length: int | None = None,
    pattern: str | None = None,
) -> str:
    """``value`` if it is a string within the length limits matching ``pattern`` (anchored)."""
    if not isinstance(value, str):
        raise InvalidField(where=where, message="Input should be a valid string")
    if len(value) < min_length:
        raise InvalidField(where=where, message=f"String should have at least {min_length} chars")
    if max_length is not None and len(value) > max_length:
        raise InvalidField(where=where, message=f"String should have at most {max_length} chars")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise InvalidField(where=where, message=f"String should match pattern '{pattern}'")
    return value


def optional_string(data: dict[str, Any], name: str, *, pattern: str) -> str | None:
    """A string field that may be absent or ``null``."""
    value = data.get(name)
    return None if value is None else checked_string(value, name, pattern=pattern)


def aware_datetime(data: dict[str, Any], name: str) -> datetime:
    """A required ISO 8601 date and time with its UTC offset."""
    text = string(data, name)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField(where=name, message="Input should be a valid datetime") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidField(where=name, message="Input should have timezone info")
    return value


def positive_number(data: dict[str, Any], name: str) -> float | None:
    """A number greater than 0, or ``None`` when absent or ``null``."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(where=name, message="Input should be a valid number")
    number = float(value)
    if math.isnan(number) or number <= 0:
        raise InvalidField(where=name, message="Input should be greater than 0")
    return number


def dictionary(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A JSON object field (empty when absent)."""
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise InvalidField(where=name, message="Input should be a valid dictionary")
    return value
