"""Customer surveys after a closed incident, their answers, and the follow-up of low scores.

One :class:`Survey` per closed incident (when one was made): its link's token is
never stored, only the seed it is derived from (with the server's survey key)
and the token's SHA-256. The answer lives on the same row (one answer each). A
low answer opens a :class:`FollowUp` that the desk calls back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from server.models.base import BIGINT, utc_column
from shared.ids import utcnow

Touchpoint = Literal["call_center", "remote_fix", "on_site"]
TOUCHPOINTS: tuple[str, ...] = ("call_center", "remote_fix", "on_site")
#: The languages a survey page and e-mail come in (gettext catalogs of the ``survey`` domain).
LANGUAGES: tuple[str, ...] = ("en", "ja", "zh", "de", "fr")
#: The longest comment an answer keeps.
COMMENT_MAX = 4000
#: The longest note a closed follow-up keeps (what was done).
FOLLOWUP_NOTE_MAX = 2000
#: A recommendation at or below this, or a satisfaction at or below ``LOW_SATISFACTION``,
#: opens a follow-up (NPS detractors are 0-6).
DETRACTOR_MAX = 6
LOW_SATISFACTION = 2


class Survey(SQLModel, table=True):
    """A one-time survey about one closed incident, and its answer once given."""

    __table_args__ = (
        # The quiet period: the newest survey of a contact.
        sa.Index("ix_survey_contact_created", "contact_key", "created_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(BIGINT, primary_key=True, autoincrement=True),
    )
    incident_id: int = Field(
        sa_column=sa.Column(
            BIGINT,
            sa.ForeignKey("incident.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        )
    )
    #: Random; the link's token is HMAC(survey key, seed). Never the token itself.
    seed: str = Field(max_length=64)
    #: SHA-256 (hex) of the link's token: how an answer finds its survey.
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    customer_number: str | None = Field(default=None, max_length=32, index=True)
    device_id: str = Field(max_length=63, index=True)
    #: Who is asked: the lower-cased e-mail, else the phone, else the customer number.
    contact_key: str | None = Field(default=None, max_length=254)
    contact_name: str | None = Field(default=None, max_length=256)
    contact_email: str | None = Field(default=None, max_length=254)
    #: One of :data:`LANGUAGES`: the contact's, else English.
    language: str = Field(default="en", max_length=8)
    #: The touchpoints this case had, comma-separated (what the page asks about).
    touchpoints: str = Field(max_length=64)
    sent_at: datetime | None = Field(default=None, sa_column=utc_column())
    reminded_at: datetime | None = Field(default=None, sa_column=utc_column())
    #: Until when a server process's survey-mail job is sending it (several processes
    #: never send one twice; a dead one's lease runs out).
    mail_lease_until: datetime | None = Field(default=None, sa_column=utc_column())
    answered_at: datetime | None = Field(default=None, sa_column=utc_column(index=True))
    recommend: int | None = None
    csat_call_center: int | None = None
    csat_remote_fix: int | None = None
    csat_on_site: int | None = None
    comment: str | None = Field(default=None, max_length=COMMENT_MAX)
    #: Seeded by ``fieldlink demo``: not a real customer's voice.
    demo: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class FollowUp(SQLModel, table=True):
    """A call back owed to a customer who answered a survey with a low score."""

    __tablename__ = "followup"

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(BIGINT, primary_key=True, autoincrement=True),
    )
    survey_id: int = Field(
        sa_column=sa.Column(
            BIGINT, sa.ForeignKey("survey.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    incident_id: int = Field(sa_column=sa.Column(BIGINT, nullable=False, index=True))
    customer_number: str | None = Field(default=None, max_length=32, index=True)
    device_id: str = Field(max_length=63, index=True)
    #: Why it was opened (``recommend 3``, ``on_site 1``).
    reason: str = Field(max_length=256)
    opened_at: datetime = Field(sa_column=utc_column(nullable=False))
    due_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    closed_at: datetime | None = Field(default=None, sa_column=utc_column(index=True))
    closed_by: str | None = Field(default=None, max_length=64)
    #: What was done (the call back's outcome).
    note: str | None = Field(default=None, max_length=FOLLOWUP_NOTE_MAX)
    #: When it was found overdue and the notification rules were told (once).
    overdue_at: datetime | None = Field(default=None, sa_column=utc_column())


class SurveyAnswer(SQLModel):
    """Body of ``POST /api/v1/surveys/{token}``: the customer's answer."""

    recommend: int = Field(ge=0, le=10, description="0-10: would you recommend us?")
    satisfaction: dict[Touchpoint, int] = Field(
        default_factory=dict, description="1-5 per touchpoint this case had"
    )
    comment: str | None = Field(default=None, max_length=COMMENT_MAX)

    @field_validator("satisfaction")
    @classmethod
    def _one_to_five(cls, value: dict[str, int]) -> dict[str, int]:
        for name, score in value.items():
            if not 1 <= score <= 5:
                msg = f"satisfaction {name} must be 1-5"
                raise ValueError(msg)
        return value

    @field_validator("comment")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            msg = "the comment must not contain NUL characters"
            raise ValueError(msg)
        return value


class SurveyPublic(SQLModel):
    """A survey as its link shows it to the customer (no scores of others, no contact)."""

    language: str
    touchpoints: list[str]
    expires_at: datetime
    answered: bool


class SurveyAnswered(SQLModel):
    """The answer of ``POST /api/v1/surveys/{token}``."""

    status: Literal["recorded"] = "recorded"
    followup: bool


class FollowUpClose(SQLModel):
    """Body of ``POST /api/v1/followups/{id}/close``: what was done."""

    note: str = Field(min_length=1, max_length=FOLLOWUP_NOTE_MAX)


class FollowUpPublic(SQLModel):
    """A follow-up as the API shows it, with the answer that opened it."""

    id: int
    incident_id: int
    customer_number: str | None
    device_id: str
    reason: str
    opened_at: datetime
    due_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    note: str | None
    state: Literal["open", "closed"]
    overdue: bool
    recommend: int | None = None
    comment: str | None = None
    contact_name: str | None = None


class FollowUpsPublic(SQLModel):
    """A page of follow-ups."""

    items: list[FollowUpPublic]
    count: int
