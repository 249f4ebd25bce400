"""What the center's commands share: the ``--config`` option and the database it names."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from server.config import DEFAULT_CONFIG, ServerSettings, load_server_settings
from shared.cli_language import tr
from shared.errors import ConfigError, InvalidInput
from shared.tomlfile import CONFIG_ENV, resolve_config_path

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="server.toml (default: $FIELDLINK_CONFIG or /etc/fieldlink/server.toml)",
    ),
]


def find_config(config: Path | None) -> Path:
    """The server's config file: ``--config``, ``FIELDLINK_CONFIG`` or the default file.

    Administrative commands act on a server's database: on built-in defaults they
    would quietly create an empty one under ``/var/lib/fieldlink`` and report on it.

    Raises:
        ConfigError: when there is none.
    """
    found = resolve_config_path(config, DEFAULT_CONFIG)
    if found is None:
        msg = tr(
            "no configuration found: give --config FILE, set %(env)s, or write %(default)s",
            env=CONFIG_ENV,
            default=DEFAULT_CONFIG,
        )
        raise ConfigError(msg)
    return found


def config_found(config: Path | None) -> bool:
    """Whether ``--config``, ``FIELDLINK_CONFIG`` or the default file names a configuration."""
    return resolve_config_path(config, DEFAULT_CONFIG) is not None


def config_hint(config: Path | None) -> str:
    """`` --config FILE`` for next-step hints, when the user gave one."""
    return f" --config {config}" if config is not None else ""


def load_settings(config: Path | None) -> ServerSettings:
    """The settings of the configuration found (never the built-in defaults)."""
    return load_server_settings(find_config(config))


def open_database(config: Path | None) -> tuple[ServerSettings, Engine]:
    """Settings and a migrated database engine for an administrative command."""
    from server.db import create_schema, make_engine

    settings = load_settings(config)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    return settings, engine


def read_password(username: str) -> str:
    """A new password: one line of stdin when it is not a terminal, else typed twice.

    Raises:
        ConfigError: The two differ, or none was given.
    """
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(tr("password for %(user)s: ", user=username))
        if getpass.getpass(tr("again: ")) != password:
            msg = tr("the passwords differ")
            raise ConfigError(msg)
    if not password:
        msg = tr("no password given (pipe it on stdin or type it at the prompt)")
        raise ConfigError(msg)
    return password


def write_out(out: Path | None, text: str) -> None:
    """Write an export to ``out`` (exactly, as UTF-8), or to stdout without one."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        out.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        msg = tr("cannot write %(path)s: %(error)s", path=out, error=exc.strerror)
        raise InvalidInput(msg) from exc
