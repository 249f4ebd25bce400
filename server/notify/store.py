"""The rules in force and the admin's view: rules in the database, the outbox, a test.

Rules made through the API (``POST /api/v1/notify/rules``) live in ``notify_rule``;
a webhook rule's signing secret is made here, kept in the rule's row encrypted with
the server's key (:mod:`server.secretbox`, the MFA key: every server process on the
database can sign with it) and shown once, in the answer that created it, as a
webhook provider shows it. A rule made before kept it in
``state_dir/notify/<name>.secret``: that file is still read (:func:`secret_path`).
A name may not repeat a ``[[server.notify]]`` rule's.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import audit, secretbox
from server.config import ServerSettings
from server.models.notify import NotifyOutbox, NotifyRuleRecord
from server.notify.planner import payload
from server.notify.rules import STORED_SECRET, DeviceFacts, Language, NotifyRule
from shared.errors import Conflict, InvalidInput, NotFound
from shared.ids import utcnow
from shared.wire import Severity

logger = logging.getLogger(__name__)

#: The key of ``notify_rule.spec`` that holds the encrypted signing secret.
SEALED_SECRET: Final = "secret_encrypted"  # noqa: S105 - a key name, not a secret


class NotifyRuleIn(BaseModel):
    """Body of ``POST /api/v1/notify/rules``: a rule (its secret is made by the server)."""

    model_config = {"extra": "forbid"}

    name: str = Field(max_length=64)
    events: list[str] = Field(default_factory=lambda: ["fault", "offline"], max_length=16)
    severity: Severity = "warning"
    device_types: list[str] = Field(default_factory=list, max_length=16)
    customers: list[str] = Field(default_factory=list, max_length=256)
    codes: list[str] = Field(default_factory=list, max_length=256)
    webhook_url: str | None = Field(default=None, max_length=2048)
    email_to: list[str] = Field(default_factory=list, max_length=32)
    #: The language of the rule's e-mails.
    language: Language = "en"
    hold_s: float = Field(default=0.0, ge=0, le=86400)
    enabled: bool = True


class NotifyRulePublic(BaseModel):
    """A rule as the API shows it (the webhook URL's credentials masked)."""

    name: str
    origin: str = Field(description="config (server.toml) or database (the API, the admin page)")
    rule: dict[str, Any]
    created_by: str | None = None
    created_at: datetime | None = None
    #: Only in the answer that created a webhook rule: shown once.
    secret: str | None = None


class NotifyOutboxPublic(BaseModel):
    """A message in the outbox."""

    id: int
    rule: str
    channel: str
    status: str
    device_id: str
    subject: str
    attempts: int
    due_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    payload: dict[str, Any]


def secret_path(settings: ServerSettings, name: str) -> Path:
    """Where the secret of the database rule ``name`` was kept before it was in the database
    (the rule's ``secret_file``: still read, removed with the rule)."""
    return settings.state_dir / "notify" / f"{name}.secret"


def _parse(record: NotifyRuleRecord, settings: ServerSettings | None = None) -> NotifyRule | None:
    """The record's rule; with ``settings``, its stored secret decrypted (or why not: told
    at delivery, see :meth:`NotifyRule.stored_secret`)."""
    spec = dict(record.spec)
    sealed = spec.pop(SEALED_SECRET, None)
    try:
        rule = NotifyRule.model_validate(spec, context={STORED_SECRET: sealed is not None})
    except ValidationError:
        logger.warning("notify rule %r in the database is not valid; ignored", record.name)
        return None
    if sealed is not None and settings is not None:
        try:
            rule.keep_secret(secretbox.decrypt(settings, str(sealed)).encode())
        except secretbox.SecretKeyError as exc:
            rule.keep_secret(None, str(exc))
    return rule


def all_rules(engine: Engine, settings: ServerSettings) -> list[NotifyRule]:
    """``[[server.notify]]`` then the database's rules."""
    with Session(engine) as db:
        records = db.exec(select(NotifyRuleRecord).order_by(col(NotifyRuleRecord.id))).all()
    parsed = [_parse(record, settings) for record in records]
    return list(settings.notify) + [rule for rule in parsed if rule is not None]


def list_rules(db: Session, settings: ServerSettings) -> list[NotifyRulePublic]:
    """Every rule, for the admin."""
    shown = [
        NotifyRulePublic(name=r.name, origin="config", rule=r.public()) for r in settings.notify
    ]
    for record in db.exec(select(NotifyRuleRecord).order_by(col(NotifyRuleRecord.id))).all():
        rule = _parse(record)
        shown.append(
            NotifyRulePublic(
                name=record.name,
                origin="database",
                rule=rule.public() if rule is not None else {"invalid": True},
                created_by=record.created_by,
                created_at=record.created_at,
            )
        )
    return shown


def create_rule(
    db: Session, settings: ServerSettings, body: NotifyRuleIn, *, actor: str, source_ip: str | None
) -> NotifyRulePublic:
    """Store a rule (audited); a webhook rule gets a fresh secret, stored encrypted and
    returned once.

    Raises:
        InvalidInput: the rule is not valid (one line).
        Conflict: a rule of that name exists.
    """
    if (
        any(rule.name == body.name for rule in settings.notify)
        or db.exec(select(NotifyRuleRecord).where(col(NotifyRuleRecord.name) == body.name)).first()
    ):
        msg = f"a notify rule named {body.name!r} exists"
        raise Conflict(msg)
    try:
        rule = NotifyRule.model_validate(body.model_dump(), context={STORED_SECRET: True})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        msg = f"{where}: {first['msg']}" if where else str(first["msg"])
        raise InvalidInput(msg) from exc
    spec = rule.model_dump(mode="json")
    secret: str | None = None
    if rule.webhook_url:
        secret = secrets.token_urlsafe(32)
        spec[SEALED_SECRET] = secretbox.encrypt(settings, secret)
    record = NotifyRuleRecord(name=rule.name, spec=spec, created_by=actor, created_at=utcnow())
    db.add(record)
    audit.record(
        db,
        actor=actor,
        action="notify.rule_add",
        target=f"notify_rule:{rule.name}",
        details={"channels": rule.channels(), "events": rule.events},
        source_ip=source_ip,
    )
    db.commit()
    return NotifyRulePublic(
        name=rule.name,
        origin="database",
        rule=rule.public(),
        created_by=actor,
        created_at=record.created_at,
        secret=secret,
    )


def delete_rule(
    db: Session, settings: ServerSettings, name: str, *, actor: str, source_ip: str | None
) -> None:
    """Remove a database rule (audited), and its old secret file if it has one; its queued
    messages are given up with it.

    Raises:
        NotFound: no database rule has that name.
        Conflict: it is a ``[[server.notify]]`` rule (edit server.toml).
    """
    if any(rule.name == name for rule in settings.notify):
        msg = f"notify rule {name!r} is in server.toml: remove it there"
        raise Conflict(msg)
    record = db.exec(select(NotifyRuleRecord).where(col(NotifyRuleRecord.name) == name)).first()
    if record is None:
        msg = f"no notify rule {name!r}"
        raise NotFound(msg)
    db.delete(record)
    secret_path(settings, name).unlink(missing_ok=True)
    audit.record(
        db,
        actor=actor,
        action="notify.rule_delete",
        target=f"notify_rule:{name}",
        source_ip=source_ip,
    )
    db.commit()


def list_outbox(
    db: Session, *, status: str | None, limit: int, offset: int
) -> tuple[list[NotifyOutboxPublic], int]:
    """The newest messages first, optionally of one status."""
    where = [col(NotifyOutbox.status) == status] if status else []
    count = db.scalar(sa.select(sa.func.count()).select_from(NotifyOutbox).where(*where))
    rows = db.exec(
        select(NotifyOutbox)
        .where(*where)
        .order_by(col(NotifyOutbox.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    items = [NotifyOutboxPublic.model_validate(row, from_attributes=True) for row in rows]
    return items, int(count or 0)


def queue_test(
    db: Session, rules: list[NotifyRule], name: str, *, actor: str, source_ip: str | None
) -> int:
    """Queue a test message for rule ``name`` (to each of its channels); audited.

    Raises:
        NotFound: no such rule.
    """
    rule = next((r for r in rules if r.name == name), None)
    if rule is None:
        msg = f"no notify rule {name!r}"
        raise NotFound(msg)
    now = utcnow()
    event: dict[str, Any] = {
        "kind": "test",
        "state": "event",
        "subject": "test",
        "severity": None,
        "message": f"a test of notify rule {name!r}, sent by {actor}",
        "at": now,
        "body": {"actor": actor},
    }
    message = payload(rule, event, DeviceFacts(id="-", type="-", customer="-"))
    for channel in rule.channels():
        db.add(
            NotifyOutbox(
                rule=name,
                channel=channel,
                device_id="-",
                subject="test",
                payload=message,
                due_at=now,
                created_at=now,
            )
        )
    audit.record(
        db, actor=actor, action="notify.test", target=f"notify_rule:{name}", source_ip=source_ip
    )
    db.commit()
    return len(rule.channels())
