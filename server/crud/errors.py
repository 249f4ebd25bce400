"""The error of a value a user gave."""

from __future__ import annotations

from shared.errors import FieldlinkError


class InvalidInput(FieldlinkError):
    """A value a user gave is not acceptable (the API answers 422, the CLI one line)."""
