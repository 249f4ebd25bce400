"""Survey settings: ``[server.survey]`` of ``server.toml``.

Example::

    [server.survey]
    expiry_days = 30
    quiet_period_days = 90
    followup_due_hours = 24

Each key has an environment override, e.g. ``FIELDLINK_SURVEY__EXPIRY_DAYS=14``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SurveySettings(BaseModel):
    """When surveys are made, how long they live, when a low score is called back. They
    are e-mailed through ``[server.smtp]`` (:mod:`server.mail`) when its host is set."""

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


def survey_settings_of(settings: object) -> SurveySettings:
    """The survey settings of the server's settings (``settings.survey``), or the defaults."""
    if isinstance(settings, SurveySettings):
        return settings
    survey = getattr(settings, "survey", None)
    return survey if isinstance(survey, SurveySettings) else SurveySettings()
