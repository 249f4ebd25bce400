"""Configuration: a TOML file whose keys every ``FIELDLINK_<KEY>`` variable overrides.

The server's settings are pydantic-settings classes; :func:`load_settings`
reads one section (``[server]``) of a TOML file and lets the environment win,
so ``FIELDLINK_DATABASE_URL`` overrides ``[server] database_url``. Nested
tables become nested models, overridden as ``FIELDLINK_<TABLE>__<KEY>``. (The
agent reads its ``[agent]`` section the same way without pydantic:
:mod:`agent.config`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError
from shared.tomlfile import read_toml_section

ENV_PREFIX = "FIELDLINK_"

S = TypeVar("S", bound="FieldlinkSettings")


class FieldlinkSettings(BaseSettings):
    """Base of the agent's and server's settings: TOML values under environment overrides."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; the file arrives as init values.
        return (env_settings, init_settings)


def load_settings(cls: type[S], path: Path | None, section: str, **overrides: Any) -> S:
    """Build settings from ``[section]`` of ``path`` (if any), the environment, and ``overrides``.

    Raises:
        ConfigError: naming the first bad key, without echoing its value (it may be a secret).
    """
    values: dict[str, Any] = read_toml_section(path, section) if path is not None else {}
    values.update(overrides)
    try:
        return cls(**values)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        key = ".".join(str(part) for part in first["loc"]) or section
        where = f"{path}: " if path is not None else ""
        msg = f"{where}[{section}] {key}: {first['msg']}"
        raise ConfigError(msg) from exc
