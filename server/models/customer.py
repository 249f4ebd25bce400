"""Customers, their contacts and sites, and the calls they make to the desk.

A customer is known by its number (the ID a caller keys into the IVR); devices
point to it (``device.customer_number``) and keep its name in ``device.customer``
for the fleet list and the KPI filters. Phone numbers are stored in E.164
(``+81312345678``): see :mod:`server.crud.phones`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import AwareDatetime, field_validator
from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow

#: A customer number: what a caller keys into the IVR (digits, letters, dashes).
NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"
#: An ISO 3166-1 alpha-2 country code.
COUNTRY_PATTERN = r"^[A-Za-z]{2}$"
_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _upper(value: str | None) -> str | None:
    return value.upper() if value else value


class _Text(SQLModel):
    """Refuses a NUL character in any text field (PostgreSQL cannot store one)."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            msg = "a NUL character is not text"
            raise ValueError(msg)
        return value


class Customer(SQLModel, table=True):
    """A customer: the number a caller keys in, the name, where it is."""

    number: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=256, index=True)
    country: str | None = Field(default=None, max_length=2)
    region: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class CustomerContact(SQLModel, table=True):
    """A person to call back at a customer; ``phone`` in E.164."""

    __tablename__ = "customer_contact"

    id: int | None = Field(
        default=None, sa_column=sa.Column(_BIGINT_PK, primary_key=True, autoincrement=True)
    )
    customer_number: str = Field(
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("customer.number", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    name: str = Field(max_length=256)
    phone: str | None = Field(default=None, max_length=16, index=True)
    email: str | None = Field(default=None, max_length=254)
    language: str | None = Field(default=None, max_length=16)


class CustomerSite(SQLModel, table=True):
    """A place where a customer's devices stand; its country places local phone numbers."""

    __tablename__ = "customer_site"
    __table_args__ = (sa.UniqueConstraint("customer_number", "name", name="uq_customer_site"),)

    id: int | None = Field(
        default=None, sa_column=sa.Column(_BIGINT_PK, primary_key=True, autoincrement=True)
    )
    customer_number: str = Field(
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("customer.number", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    name: str = Field(max_length=256)
    country: str | None = Field(default=None, max_length=2)
    region: str | None = Field(default=None, max_length=128)


class Call(SQLModel, table=True):
    """One incoming call: who called (``ani``), what it matched, who took it, what it became."""

    __tablename__ = "phone_call"

    id: int | None = Field(
        default=None, sa_column=sa.Column(_BIGINT_PK, primary_key=True, autoincrement=True)
    )
    #: The phone system's own id of the call, when it gave one.
    external_id: str | None = Field(default=None, max_length=128, index=True)
    #: The caller's number as the phone system sent it, and in E.164 when it is one.
    ani: str = Field(max_length=64)
    ani_e164: str | None = Field(default=None, max_length=16, index=True)
    customer_number: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(32), sa.ForeignKey("customer.number", ondelete="SET NULL"), index=True
        ),
    )
    device_id: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(63), sa.ForeignKey("device.id", ondelete="SET NULL"), index=True
        ),
    )
    operator: str | None = Field(default=None, max_length=64)
    started_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    answered_at: datetime | None = Field(default=None, sa_column=utc_column())
    ended_at: datetime | None = Field(default=None, sa_column=utc_column())
    incident_id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            _BIGINT_PK, sa.ForeignKey("incident.id", ondelete="SET NULL"), index=True
        ),
    )


# API bodies and answers.


class ContactIn(_Text):
    """A contact as given: any phone notation the customer's country reads."""

    name: str = Field(min_length=1, max_length=256)
    phone: str | None = Field(default=None, max_length=64)
    email: str | None = Field(
        default=None, max_length=254, schema_extra={"pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"}
    )
    language: str | None = Field(
        default=None,
        max_length=16,
        schema_extra={"pattern": r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"},
    )


class SiteIn(_Text):
    """A site as given."""

    name: str = Field(min_length=1, max_length=256)
    country: str | None = Field(default=None, schema_extra={"pattern": COUNTRY_PATTERN})
    region: str | None = Field(default=None, max_length=128)

    @field_validator("country")
    @classmethod
    def _country_upper(cls, value: str | None) -> str | None:
        return _upper(value)


class CustomerCreate(_Text):
    """Body of ``POST /api/v1/customers``."""

    number: str = Field(schema_extra={"pattern": NUMBER_PATTERN})
    name: str = Field(min_length=1, max_length=256)
    country: str | None = Field(default=None, schema_extra={"pattern": COUNTRY_PATTERN})
    region: str | None = Field(default=None, max_length=128)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=100)
    sites: list[SiteIn] = Field(default_factory=list, max_length=1000)

    @field_validator("country")
    @classmethod
    def _country_upper(cls, value: str | None) -> str | None:
        return _upper(value)


class ContactPublic(SQLModel):
    """A contact as the API shows it; ``phone`` in E.164."""

    name: str
    phone: str | None
    email: str | None
    language: str | None


class SitePublic(SQLModel):
    """A site as the API shows it."""

    name: str
    country: str | None
    region: str | None


class CustomerPublic(SQLModel):
    """A customer with its contacts, sites and how many devices it has."""

    number: str
    name: str
    country: str | None
    region: str | None
    created_at: datetime
    contacts: list[ContactPublic] = []
    sites: list[SitePublic] = []
    device_count: int = 0


class CustomersPublic(SQLModel):
    """A page of customers."""

    items: list[CustomerPublic]
    count: int


class CallCreate(_Text):
    """Body of ``POST /api/v1/calls`` (CTI middleware): a call the phone system saw."""

    ani: str = Field(min_length=1, max_length=64)
    external_id: str | None = Field(default=None, min_length=1, max_length=128)
    customer_number: str | None = Field(default=None, schema_extra={"pattern": NUMBER_PATTERN})
    device_id: str | None = Field(default=None, min_length=1, max_length=63)
    started_at: AwareDatetime | None = None
    answered_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None


class CallUpdate(_Text):
    """Body of ``PATCH /api/v1/calls/{id}``: only the fields given change."""

    customer_number: str | None = Field(default=None, schema_extra={"pattern": NUMBER_PATTERN})
    device_id: str | None = Field(default=None, min_length=1, max_length=63)
    answered_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    incident_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class CallPublic(SQLModel):
    """A recorded call."""

    id: int
    external_id: str | None
    ani: str
    ani_e164: str | None
    customer_number: str | None
    device_id: str | None
    operator: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    incident_id: int | None


class CallsPublic(SQLModel):
    """A page of calls, newest first."""

    items: list[CallPublic]
    count: int
