"""Phone numbers in E.164, read with the ``phonenumbers`` library.

A number is read in the country of the site or customer it belongs to, so
``03-1234-5678`` entered for a Japanese site and ``+81 3 1234 5678`` from the
phone system are the same ``+81312345678``.
"""

from __future__ import annotations

import phonenumbers

from server.crud.errors import InvalidInput


def to_e164(raw: str, region: str | None) -> str | None:
    """``raw`` in E.164 when it is a valid number (read in ``region``), else ``None``."""
    text = raw.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("00") and region is None:
        text = "+" + text[2:]  # the international prefix most of the world dials
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def require_e164(raw: str, region: str | None, *, field: str) -> str:
    """``raw`` in E.164.

    Raises:
        InvalidInput: naming ``field`` when it is no valid number (in ``region``).
    """
    e164 = to_e164(raw, region)
    if e164 is None:
        where = f" in {region.upper()}" if region else " (no country known: write it as +CC...)"
        msg = f"{field}: {raw[:64]!r} is not a valid phone number{where}"
        raise InvalidInput(msg)
    return e164
