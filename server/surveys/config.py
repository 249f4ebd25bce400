"""Survey settings: ``[server.survey]`` of ``server.toml``.

Example::

    [server.survey]
    expiry_days = 30
    quiet_period_days = 90
    followup_due_hours = 24
    smtp_host = "mail.example"

Each key has an environment override, e.g. ``FIELDLINK_SURVEY__EXPIRY_DAYS=14``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SurveySettings(BaseModel):
    """When surveys are made, how long they live, when a low score is called back, how
    they are mailed."""

    model_config = ConfigDict(extra="forbid")

    #: Whether closing an incident creates a survey.
    enabled: bool = True
    #: How long a survey link can be answered.
    expiry_days: float = Field(default=30.0, gt=0, le=3650)
    #: No second survey to the same contact within this many days.
    quiet_period_days: float = Field(default=90.0, ge=0, le=3650)
    #: A follow-up is due this many business hours (Monday to Friday, UTC) after the answer.
    followup_due_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    #: One reminder, this many days after the survey was sent, while it is unanswered.
    reminder_after_days: float = Field(default=7.0, gt=0, le=365)
    #: The key that makes survey links from their stored seeds (default:
    #: ``state_dir/survey.key``, made at first use, mode 0600). Links are never stored.
    key_file: Path | None = None
    #: SMTP relay for the survey e-mails; none: surveys are exported as CSV for a mailer.
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = Field(default="fieldlink@localhost", min_length=3, max_length=254)


def survey_settings_of(settings: object) -> SurveySettings:
    """The survey settings of the server's settings (``settings.survey``), or the defaults."""
    if isinstance(settings, SurveySettings):
        return settings
    survey = getattr(settings, "survey", None)
    return survey if isinstance(survey, SurveySettings) else SurveySettings()
