"""The one root error of fieldlink and its narrow subclasses.

Library errors are converted to these at the boundary (``raise ... from exc``);
the command line turns them into one line on stderr and an exit code, the API
into a JSON ``detail`` and a 4xx status.
"""

from __future__ import annotations

from shared import exit_codes


class FieldlinkError(Exception):
    """Root of every error fieldlink raises on purpose.

    Attributes:
        exit_code: The process exit status the command line uses for it
            (:mod:`shared.exit_codes`).
    """

    exit_code: int = exit_codes.FAILURE


class ConfigError(FieldlinkError):
    """A configuration file or variable is missing, malformed or inconsistent."""

    exit_code = exit_codes.USAGE


class ProtocolError(FieldlinkError):
    """A message does not follow the fieldlink protocol.

    Attributes:
        reason: A short, stable label for metrics (``bad_json``, ``bad_shape``...).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidDeviceId(FieldlinkError):
    """A device id does not match ``^[a-z0-9][a-z0-9-]{0,62}$``."""

    exit_code = exit_codes.USAGE


class NotFound(FieldlinkError):
    """The named thing does not exist."""

    exit_code = exit_codes.NOT_FOUND


class Conflict(FieldlinkError):
    """The thing already exists or is in a state that forbids the change."""

    exit_code = exit_codes.CONFLICT


class AuthError(FieldlinkError):
    """Credentials are missing, wrong or expired, or the role does not allow it."""

    exit_code = exit_codes.AUTH


class SignatureError(FieldlinkError):
    """A signed command is unsigned, badly signed, expired, replayed or foreign."""

    exit_code = exit_codes.AUTH


class UnavailableError(FieldlinkError):
    """A service fieldlink needs (broker, database, server) cannot be reached."""

    exit_code = exit_codes.UNAVAILABLE


class InvalidInput(FieldlinkError):
    """A value a user gave is not acceptable (the API answers 422, the CLI one line)."""

    exit_code = exit_codes.USAGE
