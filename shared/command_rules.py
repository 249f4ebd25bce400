"""What a device accepts of a signed command: the time allowances, and a refusal per broken rule.

:func:`shared.signing.verify_command` raises one :class:`CommandRejected` subclass
per rule, each with a short stable ``reason`` (for metrics and the agent's
``command.refused`` event); :class:`shared.replay.ReplayCache` raises
:class:`ReplayedCommand`. Standard library only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Final

from shared.errors import SignatureError

#: How far the device clock may be off from the server's before times are refused.
DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=60)
#: Longest lifetime (``expires_at - issued_at``) a command may claim.
DEFAULT_MAX_LIFETIME: Final = timedelta(hours=24)


class CommandRejected(SignatureError):
    """A command was refused; ``reason`` is a short, stable label for metrics and results.

    Attributes:
        reason: One of ``malformed``, ``unsigned``, ``bad_signature``, ``foreign``,
            ``bad_lifetime``, ``not_yet_valid``, ``expired``, ``replayed``.
        command_id: The command's id when it could be read, for the refusal report.
    """

    reason: ClassVar[str] = "rejected"

    def __init__(self, message: str, *, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class MalformedCommand(CommandRejected):
    """The payload is not a command (not JSON, wrong shape, too large)."""

    reason = "malformed"


class UnsignedCommand(CommandRejected):
    """The command carries no signature."""

    reason = "unsigned"


class BadSignature(CommandRejected):
    """The signature does not verify: forged, tampered with, or signed by another key."""

    reason = "bad_signature"


class ForeignCommand(CommandRejected):
    """The command names another device, or none."""

    reason = "foreign"


class BadLifetime(CommandRejected):
    """The command expires before it is issued, or claims a lifetime longer than allowed."""

    reason = "bad_lifetime"


class NotYetValidCommand(CommandRejected):
    """The command was issued further in the future than the clock-skew allowance."""

    reason = "not_yet_valid"


class ExpiredCommand(CommandRejected):
    """The command's ``expires_at`` has passed."""

    reason = "expired"


class ReplayedCommand(CommandRejected):
    """The command's id was seen before (or is older than what the bounded cache forgot)."""

    reason = "replayed"
