"""Site users, operators, managers and administrators, and their bearer tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow

Role = Literal["site", "operator", "manager", "admin"]
#: Roles are cumulative: each may do all that those before it may. ``site`` is a customer's
#: own IT: bound to customers (``User.customers``), it sees only their devices and the
#: sessions on them (it may end one and review its recording, and approve one waiting for
#: the site's consent: :func:`server.sessions.approval.can_approve`), and may not open sessions.
ROLES: tuple[str, ...] = ("site", "operator", "manager", "admin")
#: The roles that must be bound to at least one customer.
BOUND_ROLES: frozenset[str] = frozenset({"site"})


def role_at_least(role: str, needed: str) -> bool:
    """Whether ``role`` includes the rights of ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


class User(SQLModel, table=True):
    """A person (or script) who uses the console, the API or the gateway."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=256)
    disabled: bool = False
    #: Set by an administrator's password reset: until the user chooses a new password,
    #: their logins may only do that (``POST /api/v1/auth/password``).
    must_change_password: bool = Field(
        default=False, sa_column_kwargs={"server_default": sa.false()}
    )
    password_changed_at: datetime | None = Field(default=None, sa_column=utc_column())
    #: The user's scope (:mod:`server.scope`): customer numbers and regions, sorted and
    #: comma-separated; ``None``: no limit of that kind.
    customers: str | None = Field(default=None, max_length=2048)
    regions: str | None = Field(default=None, max_length=512)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    #: The console's language for this user (``en``, ``ja``, ``zh``, ``de``, ``fr``);
    #: ``None``: the browser's (``Accept-Language``). See :mod:`server.i18n`.
    language: str | None = Field(default=None, max_length=8)


class ApiToken(SQLModel, table=True):
    """A bearer token, stored only as its SHA-256 hash.

    ``kind`` is ``access`` (short-lived, from the password flow) or ``api``
    (long-lived, for scripts, revocable).
    """

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    kind: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=utc_column())
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column())


class UserMfa(SQLModel, table=True):
    """A user's TOTP second factor (RFC 6238); active once ``confirmed_at`` is set.

    ``secret`` is the base32 secret encrypted with the server's MFA key
    (:mod:`server.mfa`); it is shown once, at enrolment, and never again.
    ``last_step`` is the last 30-second step whose code was accepted: a code is
    never accepted twice (replay).
    """

    __tablename__ = "user_mfa"

    user_id: int = Field(foreign_key="user.id", primary_key=True)
    secret: str = Field(max_length=512)
    confirmed_at: datetime | None = Field(default=None, sa_column=utc_column())
    last_step: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger()))
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class MfaRecoveryCode(SQLModel, table=True):
    """A one-time recovery code of a user's second factor, stored only as its SHA-256 hash."""

    __tablename__ = "mfa_recovery_code"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    code_hash: str = Field(max_length=64)
    used_at: datetime | None = Field(default=None, sa_column=utc_column())


class UserPublic(SQLModel):
    """A user as the API shows it (never the hash)."""

    id: int
    username: str
    role: str
    disabled: bool
    must_change_password: bool = False
    #: Whether the user logs in with a second factor (a confirmed TOTP).
    mfa_enabled: bool = False
    #: The console's language (``None``: the browser's).
    language: str | None = None
    #: The user's scope: the customer numbers and regions they may see (empty: all).
    customers: list[str] = []
    regions: list[str] = []
    created_at: datetime

    @field_validator("customers", "regions", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):
            return [part for part in value.split(",") if part]
        return value


class UsersPublic(SQLModel):
    """A page of users and how many there are in all."""

    items: list[UserPublic]
    count: int
