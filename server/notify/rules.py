"""Notification rules: what a rule listens to, where it sends, and whether an event matches.

A rule comes from ``[[server.notify]]`` in ``server.toml`` or from the admin page
(``notify_rule`` rows); both are a :class:`NotifyRule`. Matching is plain Python on
an event and its device's registry fields, so each condition is testable alone.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from shared.errors import ConfigError
from shared.wire import SEVERITIES, Severity

#: The kinds of event a rule may listen to. An open set: a new producer (overdue
#: follow-ups, say) adds its kind here and writes events of it.
EVENT_KINDS: Final[tuple[str, ...]] = ("fault", "offline", "consent", "followup")
#: A problem, its end, or a one-off.
PROBLEM: Final = "problem"
RESOLVED: Final = "resolved"
ONE_OFF: Final = "event"
#: The languages an e-mail may be written in (:data:`server.i18n.LANGUAGES`).
Language = Literal["en", "ja", "zh", "de", "fr"]
#: Validation context of a database rule whose secret is kept in the database: it needs no
#: ``secret_file`` (``NotifyRule.model_validate(spec, context={STORED_SECRET: True})``).
STORED_SECRET: Final = "stored_secret"  # noqa: S105 - a name, not a secret
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


class NotifyRule(BaseModel):
    """One rule: conditions (all must hold; an empty list matches anything) and channels."""

    model_config = {"extra": "forbid"}

    name: str = Field(description="unique; names the rule in the outbox, the API and the log")
    #: The kinds of event it listens to (:data:`EVENT_KINDS`).
    events: list[str] = Field(default_factory=lambda: ["fault", "offline"])
    #: The least severity of a fault that matches (offline and consent have none).
    severity: Severity = "warning"
    device_types: list[str] = Field(default_factory=list)
    #: Customer numbers or names.
    customers: list[str] = Field(default_factory=list)
    #: Fault codes, ``*`` and ``?`` as in shell patterns (``SC-5*``).
    codes: list[str] = Field(default_factory=list)
    #: An ``http(s)://`` URL that receives a signed JSON POST.
    webhook_url: str | None = Field(default=None, max_length=2048)
    #: The file holding the webhook's signing secret (required with ``webhook_url``).
    secret_file: Path | None = None
    #: Addresses that receive an e-mail (``[server.smtp]``).
    email_to: list[str] = Field(default_factory=list)
    #: The language of its e-mails (``en``, ``ja``, ``zh``, ``de``, ``fr``); a webhook's
    #: JSON is the same in every language.
    language: Language = "en"
    #: A problem that resolves within this many seconds is not told at all (quiet period).
    hold_s: float = Field(default=0.0, ge=0, le=86400)
    enabled: bool = True
    #: A database rule's signing secret, decrypted (:meth:`keep_secret`), or why it could not
    #: be: never validated from input, dumped, shown or in the repr.
    _secret: bytes | None = PrivateAttr(default=None)
    _secret_error: str | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            msg = "letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"
            raise ValueError(msg)
        return value

    @field_validator("events")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENT_KINDS))
        if unknown or not value:
            msg = f"events must be some of {', '.join(EVENT_KINDS)}"
            raise ValueError(msg)
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = "webhook_url must be an http:// or https:// URL with a host"
            raise ValueError(msg)
        return value

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _EMAIL.match(address):
                msg = "email_to holds an address that is not name@domain"
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _has_a_channel(self, info: ValidationInfo) -> NotifyRule:
        if not self.webhook_url and not self.email_to:
            msg = "a rule needs webhook_url or email_to"
            raise ValueError(msg)
        stored = bool(info.context and info.context.get(STORED_SECRET))
        if self.webhook_url and self.secret_file is None and not stored:
            msg = "webhook_url needs secret_file (the signing secret)"
            raise ValueError(msg)
        return self

    def keep_secret(self, secret: bytes | None, error: str | None = None) -> NotifyRule:
        """Give the rule its signing secret from the database (or why it has none); ``self``."""
        self._secret, self._secret_error = secret, error
        return self

    def stored_secret(self) -> bytes | None:
        """The signing secret kept in the database; None: read ``secret_file``.

        Raises:
            ConfigError: the stored secret could not be decrypted (one line, no secret).
        """
        if self._secret_error is not None:
            msg = f"notify rule {self.name!r}: {self._secret_error}"
            raise ConfigError(msg)
        return self._secret

    def channels(self) -> list[str]:
        """``webhook`` and/or ``email``."""
        return (["webhook"] if self.webhook_url else []) + (["email"] if self.email_to else [])

    def public(self) -> dict[str, Any]:
        """The rule as the API and the CLI show it: the URL's credentials masked."""
        shown = self.model_dump(mode="json")
        shown["webhook_url"] = mask_url(self.webhook_url) if self.webhook_url else None
        return shown


def mask_url(url: str) -> str:
    """The URL without its secrets: the password of ``user:password@`` and query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class DeviceFacts:
    """What a rule may ask of an event's device."""

    id: str
    type: str = ""
    customer: str = ""
    customer_number: str | None = None
    site: str | None = None
    model: str = ""
    serial: str = ""


@dataclass(frozen=True)
class EventFacts:
    """What a rule may ask of an event."""

    kind: str
    state: str
    subject: str
    severity: str | None = None
    code: str | None = None


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def matches(rule: NotifyRule, event: EventFacts, device: DeviceFacts) -> bool:
    """Whether ``rule`` wants to hear of ``event`` on ``device``."""
    if not rule.enabled or event.kind not in rule.events:
        return False
    if rule.device_types and device.type not in rule.device_types:
        return False
    if rule.customers and not (
        device.customer in rule.customers
        or (device.customer_number is not None and device.customer_number in rule.customers)
    ):
        return False
    if event.kind != "fault":
        return True
    if _rank(event.severity) < _rank(rule.severity):
        return False
    if rule.codes:
        code = event.code or ""
        return any(fnmatch.fnmatchcase(code, pattern) for pattern in rule.codes)
    return True
