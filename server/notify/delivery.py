"""Delivering one message: a signed webhook POST or an e-mail, and the retry schedule.

A webhook receives the message as JSON with these headers (docs/operations.md,
"Verifying a webhook"):

- ``X-Fieldlink-Signature: t=<unix time>,v1=<hex>``: HMAC-SHA256 with the rule's
  secret (kept in the database for a rule made over the API, else in its
  ``secret_file``) over ``<unix time>.`` followed by the exact body bytes (as Stripe signs);
- ``X-Fieldlink-Delivery``: the outbox id (the same on every retry: deduplicate on it);
- ``X-Fieldlink-Event``: ``<kind>.<state>``, e.g. ``fault.problem``.

Any 2xx is delivered; anything else, or no answer, is a failure to retry. Errors
name the URL masked (:func:`~server.notify.rules.mask_url`), never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx2 as httpx

from server.mail import SmtpSettings, send_mail
from server.notify.destinations import BlockedDestination, DestinationPolicy, check_webhook_url
from server.notify.mails import mail_text
from server.notify.rules import NotifyRule, mask_url
from shared import __version__
from shared.errors import ConfigError, FieldlinkError

# httpx logs every request's full URL at INFO: a webhook URL's password or token would
# land in the server's log. What fails is logged here, with the URL masked.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SIGNATURE_HEADER: Final = "X-Fieldlink-Signature"
DELIVERY_HEADER: Final = "X-Fieldlink-Delivery"
EVENT_HEADER: Final = "X-Fieldlink-Event"
WEBHOOK_TIMEOUT_S: Final = 10.0


class DeliveryError(FieldlinkError):
    """A message was not delivered (this attempt)."""


def read_secret(path: Path, rule: str) -> bytes:
    """A rule's signing secret from its file (read at each delivery: rotate it in place).

    Raises:
        ConfigError: the file is unreadable or empty (one line, without its content).
    """
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        msg = f"notify rule {rule!r}: cannot read secret_file {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    if not secret:
        msg = f"notify rule {rule!r}: secret_file {path} is empty"
        raise ConfigError(msg)
    return secret


def rule_secret(rule: NotifyRule) -> bytes:
    """The rule's signing secret: the one kept in the database, else its ``secret_file``'s.

    Raises:
        ConfigError: the stored secret does not decrypt, or the file is unreadable or empty.
    """
    stored = rule.stored_secret()
    if stored is not None:
        return stored
    if rule.secret_file is None:
        msg = f"notify rule {rule.name!r} has no signing secret"
        raise ConfigError(msg)
    return read_secret(rule.secret_file, rule.name)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Fieldlink-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old
    (what a receiver does; docs/operations.md has the same in a few lines)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def encode(payload: Mapping[str, Any]) -> bytes:
    """The webhook body: compact JSON, keys sorted (the exact bytes signed)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


async def post_webhook(
    rule: NotifyRule,
    payload: Mapping[str, Any],
    delivery_id: int,
    now: float,
    client: httpx.AsyncClient,
    policy: DestinationPolicy,
) -> None:
    """POST ``payload`` to the rule's webhook, signed, if ``policy`` lets it reach the host.

    Raises:
        DeliveryError: a blocked destination, or no 2xx answer (the message names the URL
            masked).
        ConfigError: the secret is unreadable (:func:`rule_secret`).
    """
    assert rule.webhook_url is not None  # noqa: S101
    try:
        await check_webhook_url(rule.webhook_url, policy)
    except BlockedDestination as exc:
        msg = f"POST {mask_url(rule.webhook_url)}: {exc}"
        raise DeliveryError(msg) from exc
    secret = rule_secret(rule)
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"fieldlink/{__version__}",
        SIGNATURE_HEADER: sign(secret, int(now), body),
        DELIVERY_HEADER: str(delivery_id),
        EVENT_HEADER: f"{payload.get('kind')}.{payload.get('state')}",
    }
    shown = mask_url(rule.webhook_url)
    try:
        answer = await client.post(rule.webhook_url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        msg = f"POST {shown}: {type(exc).__name__}"
        raise DeliveryError(msg) from exc
    if not 200 <= answer.status_code < 300:
        msg = f"POST {shown}: HTTP {answer.status_code}"
        raise DeliveryError(msg)


async def send_email(rule: NotifyRule, payload: Mapping[str, Any], smtp: SmtpSettings) -> None:
    """E-mail ``payload`` to the rule's addresses through ``[server.smtp]``, in the rule's
    language.

    Raises:
        DeliveryError: the relay could not be reached or refused it.
    """
    subject, body = mail_text(payload, rule.language)
    try:
        await send_mail(smtp, rule.email_to, subject, body)
    except FieldlinkError as exc:
        raise DeliveryError(str(exc)) from exc


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """The wait after the ``attempts``-th failure: ``base_s``, doubling, at most ``max_s``."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))
