"""The tamper-evident audit log: append entries in the caller's transaction, verify the chain.

Every entry stores ``hash = SHA-256(canonical JSON of its fields and prev_hash)``
with ``prev_hash`` the hash of the entry before it (:data:`GENESIS_HASH` for
the first). Ids are gapless (1, 2, 3...): they are handed out by the one-row
``audit_head`` table, which also remembers the newest entry's hash.

Appends are serialized by updating ``audit_head`` before anything is read:
on PostgreSQL the row lock makes concurrent appenders (threads or server
processes) wait for each other's commit, and the waiting ``UPDATE`` re-reads the
committed head; on SQLite the ``UPDATE`` takes the database's write lock for the
rest of the transaction. Either way the lock is held until the caller commits,
so call :func:`record` last, right before ``session.commit()``, and keep that
transaction short. Were the serialization ever bypassed, the primary key on
the id and the unique hash would make the second writer fail, never fork the
chain.

Details never hold secrets: keys that name one (``password``, ``token``,
``secret``, ``private_key``...) and values that look like one (bearer tokens,
PEM private keys) are replaced by ``[redacted]`` before anything is stored.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from server.models import GENESIS_HASH, AuditEntry, AuditHead
from shared.errors import FieldlinkError
from shared.ids import utcnow
from shared.models import canonical_json

logger = logging.getLogger(__name__)

#: The actor of what the server does on its own.
SYSTEM_ACTOR = "system"
REDACTED = "[redacted]"
_VERIFY_BATCH = 1000
_SENSITIVE_KEY = re.compile(
    r"password|passwd|secret|private_?key|privkey|credential|authorization|api_?key|^key$"
    r"|(^|_)token(_hash)?$",
    re.IGNORECASE,
)
_SENSITIVE_VALUE = re.compile(r"^flk_|-----BEGIN [A-Z ]*PRIVATE KEY-----")


class AuditLogError(FieldlinkError):
    """The audit log cannot be appended to (its head row is missing)."""


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found: ``intact``, or the first broken entry and why."""

    intact: bool
    entries: int
    broken_at: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line for people: ``audit log intact: N entries`` or where it broke."""
        if self.intact:
            return f"audit log intact: {self.entries} entries"
        return f"audit log BROKEN at entry #{self.broken_at}: {self.reason}"


def cli_actor() -> str:
    """The actor of an administrative command: ``cli:<unix user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry, no login name
        return "cli:unknown"


def device_actor(device_id: str) -> str:
    """The actor of something a device did: ``device:<id>``."""
    return f"device:{device_id}"


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(key): REDACTED if _SENSITIVE_KEY.search(str(key)) else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, str) and _SENSITIVE_VALUE.search(value):
        return REDACTED
    return value


def details_text(details: dict[str, Any] | None) -> str:
    """The canonical JSON stored for ``details``: secrets redacted, other values as JSON."""
    plain = json.loads(json.dumps(details or {}, default=str))
    return canonical_json(_scrub(plain)).decode()


def _ts_text(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(entry: AuditEntry) -> str:
    """The SHA-256 hex of an entry's fields and its ``prev_hash`` (its own ``hash`` aside)."""
    fields = {
        "id": entry.id,
        "ts": _ts_text(entry.ts),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "details": entry.details,
        "source_ip": entry.source_ip,
        "prev_hash": entry.prev_hash,
    }
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction; the caller commits (or rolls back).

    Holds the audit log's append lock until that commit, so call it last.

    Raises:
        AuditLogError: when the log's head row is missing (the schema is not migrated).
    """
    head = session.execute(
        sa.update(AuditHead)
        .where(col(AuditHead.id) == 1)
        .values(seq=col(AuditHead.seq) + 1)
        .returning(col(AuditHead.seq), col(AuditHead.head_hash))
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if head is None:
        msg = "the audit log has no head row: run the migrations (fieldlink server run)"
        raise AuditLogError(msg)
    seq, prev_hash = int(head[0]), str(head[1])
    entry = AuditEntry(
        id=seq,
        ts=utcnow(),
        actor=actor[:128],
        action=action[:64],
        target=target[:256] if target is not None else None,
        details=details_text(details),
        source_ip=source_ip[:64] if source_ip is not None else None,
        prev_hash=prev_hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.execute(
        sa.update(AuditHead)
        .where(col(AuditHead.id) == 1)
        .values(head_hash=entry.hash)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    logger.debug("audit #%d %s by %s on %s", entry.id, action, actor, target)
    return entry


def head(session: Session) -> tuple[int, str] | None:
    """The newest entry's id and hash, to anchor outside the database; ``None`` when empty."""
    return _head(session)


def _head(session: Session) -> tuple[int, str] | None:
    row = session.exec(
        select(AuditHead.seq, AuditHead.head_hash).where(col(AuditHead.id) == 1)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def verify(session: Session) -> VerifyResult:
    """Walk the chain from the first entry and name the first broken one.

    Finds edited entries (content no longer matches its hash), deleted ones (a
    gap in the ids, or entries missing from the end), reordered ones (an entry
    whose ``prev_hash`` is not its predecessor's hash) and a changed head.
    Entries appended while it runs are left for the next run.
    """
    head = _head(session)
    if head is None:
        return VerifyResult(False, 0, 1, "the log's head row is missing")
    head_seq, head_hash = head
    expected_id, prev_hash, count = 1, GENESIS_HASH, 0
    while True:
        batch = session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.id) >= expected_id, col(AuditEntry.id) <= head_seq)
            .order_by(col(AuditEntry.id))
            .limit(_VERIFY_BATCH)
        ).all()
        for entry in batch:
            if entry.id != expected_id:
                return VerifyResult(
                    False, count, entry.id, f"entry #{expected_id} before it is missing"
                )
            if entry_hash(entry) != entry.hash:
                return VerifyResult(False, count, entry.id, "its content does not match its hash")
            if entry.prev_hash != prev_hash:
                return VerifyResult(
                    False, count, entry.id, "its prev_hash is not the hash of the entry before it"
                )
            expected_id, prev_hash, count = entry.id + 1, entry.hash, count + 1
        if len(batch) < _VERIFY_BATCH:
            break
    if count < head_seq:
        return VerifyResult(
            False, count, expected_id, f"entries #{expected_id}..#{head_seq} are missing"
        )
    if prev_hash != head_hash:
        return VerifyResult(False, count, head_seq, "it is not the head the log recorded")
    # Read after the walk: a later append commits its entry and the head together.
    last_id = session.exec(select(func.max(AuditEntry.id))).one()
    now_head = _head(session)
    if last_id is not None and (now_head is None or int(last_id) > now_head[0]):
        return VerifyResult(False, count, head_seq + 1, "it lies beyond the log's recorded head")
    return VerifyResult(True, count)


def list_entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[AuditEntry], int]:
    """A page of entries, newest first, and how many match in all.

    ``action`` ending in ``*`` matches by prefix (``device.*``); ``since`` is
    inclusive, ``until`` exclusive.
    """
    conditions: list[Any] = []
    if actor:
        conditions.append(col(AuditEntry.actor) == actor)
    if action:
        if action.endswith("*"):
            conditions.append(col(AuditEntry.action).startswith(action[:-1], autoescape=True))
        else:
            conditions.append(col(AuditEntry.action) == action)
    if target:
        conditions.append(col(AuditEntry.target) == target)
    if since is not None:
        conditions.append(col(AuditEntry.ts) >= since)
    if until is not None:
        conditions.append(col(AuditEntry.ts) < until)
    where = sa.and_(sa.true(), *conditions)
    total = session.exec(select(func.count()).select_from(AuditEntry).where(where)).one()
    rows = session.exec(
        select(AuditEntry)
        .where(where)
        .order_by(col(AuditEntry.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total)
