"""Sending e-mail: ``[server.smtp]`` and :func:`send_mail`, for every part of the server
that writes to people (notifications, surveys).

The standard library's :mod:`smtplib` on a worker thread: STARTTLS (verified against
the system's CAs or ``ca_file``) unless ``starttls = false``, then ``AUTH`` when a
user name is set, its password read from ``password_file`` at each send (rotate it
without a restart). The password is never logged; errors name the server only.
"""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from pydantic import BaseModel, Field

from shared.errors import ConfigError, FieldlinkError


class MailError(FieldlinkError):
    """A message could not be handed to the SMTP server."""


class SmtpSettings(BaseModel):
    """``[server.smtp]``: the relay the server sends e-mail through."""

    model_config = {"extra": "forbid"}

    #: The relay's host; none: the server sends no e-mail.
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    #: Upgrade the connection with STARTTLS before anything else is said (verified).
    starttls: bool = True
    #: CA bundle to verify the relay's certificate with (default: the system's).
    ca_file: Path | None = None
    username: str | None = None
    #: The file holding the password of ``username`` (mode 0600, read at each send).
    password_file: Path | None = None
    #: The ``From:`` address.
    sender: str = "fieldlink@localhost"
    timeout_s: float = Field(default=30.0, gt=0, le=600)


def check_smtp(settings: SmtpSettings) -> None:
    """Refuse a configuration that cannot send (no host, an unreadable password file).

    Raises:
        ConfigError: one line naming what is wrong.
    """
    if not settings.host:
        msg = "[server.smtp] host is not set: e-mail cannot be sent"
        raise ConfigError(msg)
    if settings.username and settings.password_file is None:
        msg = "[server.smtp] username needs password_file"
        raise ConfigError(msg)
    if settings.password_file is not None:
        _read_secret(settings.password_file, "[server.smtp] password_file")


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        msg = f"{what}: cannot read {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    if not value:
        msg = f"{what}: {path} is empty"
        raise ConfigError(msg)
    return value


def build_message(
    settings: SmtpSettings, to: Sequence[str], subject: str, body: str
) -> EmailMessage:
    """A plain-text message from ``sender`` to ``to``."""
    # Headers unfolded up to RFC 5322's 998: Python folds a long subject before its
    # first word otherwise (valid, but some clients show the leading space).
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    message["From"] = settings.sender
    message["To"] = ", ".join(to)
    # Header injection: a subject is one line.
    message["Subject"] = " ".join(subject.split())[:200]
    message["Message-ID"] = make_msgid(domain=settings.sender.rsplit("@", 1)[-1] or None)
    message.set_content(body)
    return message


def _send_blocking(settings: SmtpSettings, message: EmailMessage) -> None:
    check_smtp(settings)
    assert settings.host is not None  # noqa: S101  (check_smtp)
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
            smtp.ehlo()
            if settings.starttls:
                context = ssl.create_default_context(
                    cafile=str(settings.ca_file) if settings.ca_file else None
                )
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.username:
                assert settings.password_file is not None  # noqa: S101  (check_smtp)
                password = _read_secret(settings.password_file, "[server.smtp] password_file")
                smtp.login(settings.username, password)
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        # The server's answer, never the password.
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        msg = f"SMTP {settings.host}:{settings.port} answered {exc.smtp_code} {text}"[:300]
        raise MailError(msg) from exc
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        msg = f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}"[:300]
        raise MailError(msg) from exc


def send_mail_blocking(settings: SmtpSettings, to: Sequence[str], subject: str, body: str) -> None:
    """:func:`send_mail` on the calling thread (for code already on a worker thread).

    Raises:
        ConfigError: SMTP is not configured (or its password file is unreadable).
        MailError: the relay could not be reached or refused the message.
    """
    if not to:
        msg = "an e-mail needs at least one recipient"
        raise MailError(msg)
    _send_blocking(settings, build_message(settings, to, subject, body))


async def send_mail(settings: SmtpSettings, to: Sequence[str], subject: str, body: str) -> None:
    """Send one plain-text e-mail through ``[server.smtp]`` (on a worker thread).

    Raises:
        ConfigError: SMTP is not configured (or its password file is unreadable).
        MailError: the relay could not be reached or refused the message.
    """
    if not to:
        msg = "an e-mail needs at least one recipient"
        raise MailError(msg)
    message = build_message(settings, to, subject, body)
    await asyncio.to_thread(_send_blocking, settings, message)
