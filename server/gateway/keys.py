"""Operators' public keys for the SSH gateway: parse, add, list, remove, look up at login.

A key is one OpenSSH public key line (``ssh-ed25519 AAAA... comment``, as in
``~/.ssh/id_ed25519.pub``) or an RFC 4716 public key block. It is stored
normalized (type, base64 and comment) with its SHA256 fingerprint, which is
unique: one key belongs to one user. Private keys, several keys at once,
``authorized_keys`` options, DSA and RSA keys under 2048 bits are refused
with a clear message. Every change is audited in the same transaction.

The gateway looks a key up by its fingerprint (public data, so no secret is
compared here); the client's possession of the private key is proven by its
signature, which asyncssh checks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncssh
from sqlmodel import Session, col, select

from server import audit
from server.crud import InvalidInput
from server.crud.conflicts import conflict_on_duplicate
from server.models import User, UserSSHKey, role_at_least
from shared.errors import Conflict, NotFound
from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: Smallest RSA key accepted (OpenSSH's own floor since 9.x is 1024; NIST's is 2048).
MIN_RSA_BITS: Final = 2048
#: Longest key text accepted (an RSA 16384 key line is about 2.8 kB).
MAX_KEY_TEXT: Final = 8192
_NAME_LIMIT: Final = 128
#: The role a key's owner needs to open sessions through the gateway.
GATEWAY_ROLE: Final = "operator"
#: The actor of a refused login whose key belongs to nobody.
ANONYMOUS_ACTOR: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A public key as given, checked and normalized.

    Attributes:
        key_type: The SSH algorithm (``ssh-ed25519``, ``ssh-rsa``...).
        public_key: The normalized OpenSSH line (type, base64, comment).
        fingerprint: ``SHA256:...``, as ``ssh-keygen -l`` shows it.
        comment: The key's comment (often ``user@host``), or ``None``.
    """

    key_type: str
    public_key: str
    fingerprint: str
    comment: str | None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a key presented at the gateway belongs to (read at login).

    Attributes:
        key_id: The key's row id.
        key_name: The key's label.
        fingerprint: The key's fingerprint.
        user_id: The owner's id.
        username: The owner's user name.
        role: The owner's role.
        disabled: Whether the owner is disabled.
    """

    key_id: int
    key_name: str
    fingerprint: str
    user_id: int
    username: str
    role: str
    disabled: bool

    def refusal(self) -> str | None:
        """Why this owner may not open sessions through the gateway, or ``None``."""
        if self.disabled:
            return f"user {self.username} is disabled"
        if not role_at_least(self.role, GATEWAY_ROLE):
            return f"user {self.username} does not have the {GATEWAY_ROLE} role"
        return None


def parse_public_key(text: str) -> ParsedKey:
    """Check and normalize one public key.

    Args:
        text: One OpenSSH public key line, or an RFC 4716 block.

    Returns:
        The key, normalized.

    Raises:
        InvalidInput: Not exactly one acceptable public key (private key,
            garbage, several keys, options, a weak algorithm).
    """
    if len(text) > MAX_KEY_TEXT:
        msg = f"that is not a public key (more than {MAX_KEY_TEXT} characters)"
        raise InvalidInput(msg)
    stripped = text.strip()
    if not stripped:
        msg = "no public key given (the contents of a .pub file, e.g. ~/.ssh/id_ed25519.pub)"
        raise InvalidInput(msg)
    if "PRIVATE KEY" in stripped:
        msg = "that is a private key: give the public key (the .pub file) and keep this one secret"
        raise InvalidInput(msg)
    lines = [line for line in stripped.splitlines() if line.strip()]
    if not stripped.startswith("---- BEGIN") and len(lines) > 1:
        msg = f"give one public key at a time (found {len(lines)} lines)"
        raise InvalidInput(msg)
    try:
        key = asyncssh.import_public_key(stripped)
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        msg = "that is not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA... comment')"
        raise InvalidInput(msg) from exc
    key_type = key.algorithm.decode()
    if key_type == "ssh-dss":
        msg = "DSA keys are too weak: use an Ed25519 key (ssh-keygen -t ed25519)"
        raise InvalidInput(msg)
    bits = getattr(getattr(key, "pyca_key", None), "key_size", None)
    if key_type == "ssh-rsa" and isinstance(bits, int) and bits < MIN_RSA_BITS:
        msg = f"this RSA key has {bits} bits: use at least {MIN_RSA_BITS}, or Ed25519"
        raise InvalidInput(msg)
    comment = key.get_comment()
    key.set_comment(None)
    base = key.export_public_key("openssh").decode().strip()
    public_key = f"{base} {comment}" if comment else base
    return ParsedKey(
        key_type=key_type,
        public_key=public_key,
        fingerprint=key.get_fingerprint("sha256"),
        comment=comment,
    )


def _user(db: Session, username: str) -> User:
    user = db.exec(select(User).where(User.username == username)).first()
    if user is None or user.id is None:
        msg = f"no user {username!r}"
        raise NotFound(msg)
    return user


def add_key(
    db: Session,
    *,
    username: str,
    public_key: str,
    name: str | None = None,
    actor: str,
    source_ip: str | None = None,
) -> UserSSHKey:
    """Register a public key for a user, audited; commits.

    Args:
        db: The database session.
        username: The key's owner.
        public_key: The key text (see :func:`parse_public_key`).
        name: A label (default: the key's comment, else its type).
        actor: Who adds it (a user name or ``cli:...``).
        source_ip: The actor's address, for the audit log.

    Returns:
        The stored key.

    Raises:
        NotFound: No such user.
        InvalidInput: Not an acceptable public key, or a bad label.
        Conflict: The key is already registered (to this user or another).
    """
    user = _user(db, username)
    parsed = parse_public_key(public_key)
    label = (name if name is not None else (parsed.comment or parsed.key_type)).strip()
    if not label or len(label) > _NAME_LIMIT or not label.isprintable():
        msg = f"a key's name is 1-{_NAME_LIMIT} printable characters"
        raise InvalidInput(msg)
    existing = db.exec(
        select(UserSSHKey).where(UserSSHKey.fingerprint == parsed.fingerprint)
    ).first()
    if existing is not None:
        raise Conflict(_duplicate_message(existing, user, parsed.fingerprint))
    assert user.id is not None  # noqa: S101  (checked by _user)
    row = UserSSHKey(
        user_id=user.id, name=label, public_key=parsed.public_key, fingerprint=parsed.fingerprint
    )
    db.add(row)
    # A concurrent add of the same key.
    with conflict_on_duplicate(db, f"key {parsed.fingerprint} is already registered"):
        db.flush()
        audit.record(
            db,
            actor=actor,
            action="ssh_key.add",
            target=f"user:{user.username}",
            details={"fingerprint": parsed.fingerprint, "name": label, "type": parsed.key_type},
            source_ip=source_ip,
        )
        db.commit()
    db.refresh(row)
    return row


def _duplicate_message(existing: UserSSHKey, user: User, fingerprint: str) -> str:
    if existing.user_id == user.id:
        return f"key {fingerprint} is already registered for {user.username} as {existing.name!r}"
    # Which other user holds it is not said: the caller may not be an admin.
    return f"key {fingerprint} is already registered to another user"


def list_keys(db: Session, *, username: str) -> Sequence[UserSSHKey]:
    """A user's keys, oldest first.

    Raises:
        NotFound: No such user.
    """
    user = _user(db, username)
    return db.exec(
        select(UserSSHKey).where(UserSSHKey.user_id == user.id).order_by(col(UserSSHKey.id))
    ).all()


def find_key(db: Session, *, username: str, key: str) -> UserSSHKey:
    """One of a user's keys, by id, fingerprint (``SHA256:...``) or name.

    Raises:
        NotFound: No such user, or no such key of theirs.
    """
    user = _user(db, username)
    where = UserSSHKey.user_id == user.id
    query = select(UserSSHKey).where(where)
    if key.isdigit():
        query = query.where(UserSSHKey.id == int(key))
    elif key.startswith("SHA256:"):
        query = query.where(UserSSHKey.fingerprint == key)
    else:
        query = query.where(UserSSHKey.name == key)
    found = db.exec(query.order_by(col(UserSSHKey.id))).all()
    if not found:
        msg = f"{user.username} has no SSH key {key!r}"
        raise NotFound(msg)
    if len(found) > 1:
        msg = f"{user.username} has {len(found)} keys named {key!r}: give the fingerprint"
        raise InvalidInput(msg)
    return found[0]


def remove_key(
    db: Session, *, username: str, key: str, actor: str, source_ip: str | None = None
) -> UserSSHKey:
    """Remove one of a user's keys (see :func:`find_key`), audited; commits.

    Raises:
        NotFound: No such user or key.
    """
    row = find_key(db, username=username, key=key)
    db.delete(row)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="ssh_key.remove",
        target=f"user:{username}",
        details={"fingerprint": row.fingerprint, "name": row.name},
        source_ip=source_ip,
    )
    db.commit()
    return row


def key_owner(db: Session, fingerprint: str) -> KeyOwner | None:
    """Who the key with this fingerprint belongs to (``None``: no such key)."""
    found = db.exec(
        select(UserSSHKey, User)
        .join(User, col(User.id) == UserSSHKey.user_id)
        .where(UserSSHKey.fingerprint == fingerprint)
    ).first()
    if found is None:
        return None
    key, user = found
    assert key.id is not None  # noqa: S101  (rows read back have ids)
    assert user.id is not None  # noqa: S101
    return KeyOwner(
        key_id=key.id,
        key_name=key.name,
        fingerprint=key.fingerprint,
        user_id=user.id,
        username=user.username,
        role=user.role,
        disabled=user.disabled,
    )


def record_login(db: Session, owner: KeyOwner, *, device_id: str, source_ip: str | None) -> None:
    """A gateway login with this key: set its ``last_used_at`` and audit it; commits."""
    row = db.get(UserSSHKey, owner.key_id)
    if row is not None:
        row.last_used_at = utcnow()
        db.add(row)
        db.flush()
    audit.record(
        db,
        actor=owner.username,
        action="gateway.login",
        target=device_id,
        details={"fingerprint": owner.fingerprint, "key_name": owner.key_name},
        source_ip=source_ip,
    )
    db.commit()


def record_refused_login(
    db: Session,
    *,
    username: str | None,
    device_id: str,
    fingerprint: str,
    why: str,
    source_ip: str | None,
) -> None:
    """A refused gateway login, audited (the key's fingerprint only); commits."""
    audit.record(
        db,
        actor=username or ANONYMOUS_ACTOR,
        action="gateway.login_failed",
        target=device_id[:64],
        details={"fingerprint": fingerprint, "reason": why},
        source_ip=source_ip,
    )
    db.commit()


def read_key_file(file: str) -> str:
    """The text of a public key file (``-``: standard input), for the CLI.

    Raises:
        InvalidInput: The file cannot be read.
    """
    if file == "-":
        return sys.stdin.read(MAX_KEY_TEXT + 1)
    path = Path(file).expanduser()
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(MAX_KEY_TEXT + 1)
    except OSError as exc:
        msg = f"cannot read {file}: {exc.strerror or exc}"
        raise InvalidInput(msg) from exc
