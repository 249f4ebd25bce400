"""Reading fieldlink's TOML configuration files, without pydantic (the agent uses it too)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Final

from shared.errors import ConfigError

#: Names the config file when ``--config`` is not given.
CONFIG_ENV: Final = "FIELDLINK_CONFIG"


def read_toml_section(path: Path, section: str) -> dict[str, Any]:
    """Read ``[section]`` of a TOML file (an empty dict when the section is absent).

    Raises:
        ConfigError: when the file is missing, unreadable or not valid TOML.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        msg = f"config file not found: {path}"
        raise ConfigError(msg) from exc
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: invalid TOML: {exc}"
        raise ConfigError(msg) from exc
    value = data.get(section, {})
    if not isinstance(value, dict):
        msg = f"{path}: [{section}] must be a table"
        raise ConfigError(msg)
    return value


def resolve_config_path(path: Path | None, default: Path) -> Path | None:
    """The config file to read: the argument, else ``FIELDLINK_CONFIG``, else ``default``."""
    if path is not None:
        return path
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    return default if default.exists() else None
