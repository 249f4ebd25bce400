"""``fieldlink server init-config``: a commented ``server.toml`` to start from.

The sample (``server.sample.toml`` beside this module) lists every key of
:class:`server.config.ServerSettings` with its default, commented out where the
default is what most sites want; a test keeps the two in step.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Annotated

import typer

from server.config import DEFAULT_CONFIG, ServerSettings
from server.config_file import load_settings
from shared.errors import ConfigError

SAMPLE = "server.sample.toml"


def render_sample(
    *,
    public_url: str = "http://127.0.0.1:8080",
    database_url: str = "sqlite:////var/lib/fieldlink/fieldlink.db",
    broker_url: str = "embedded",
    state_dir: Path = Path("/var/lib/fieldlink"),
) -> str:
    """The sample configuration with the given values filled in."""
    text = files("server").joinpath(SAMPLE).read_text(encoding="utf-8")
    for name, value in (("public_url", public_url), ("database_url", database_url)):
        if '"' in value or "\n" in value:
            msg = f"{name} must not contain quotes or line breaks"
            raise ConfigError(msg)
    return Template(text).substitute(
        public_url=public_url,
        database_url=database_url,
        broker_url=broker_url,
        state_dir=str(state_dir),
    )


def init_config(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="where to write it (a file; '-' for stdout)")
    ] = DEFAULT_CONFIG,
    public_url: Annotated[
        str, typer.Option(help="the URL devices and operators reach this server at")
    ] = "http://127.0.0.1:8080",
    database_url: Annotated[
        str, typer.Option(help="SQLAlchemy URL: sqlite:///... or postgresql+psycopg://...")
    ] = "sqlite:////var/lib/fieldlink/fieldlink.db",
    broker_url: Annotated[
        str, typer.Option(help="mqtts://host:8883, mqtt://host:1883 or embedded")
    ] = "embedded",
    state_dir: Annotated[Path, typer.Option(help="the server's keys, CA, recordings")] = Path(
        "/var/lib/fieldlink"
    ),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented server.toml to start from (every key, with its default)."""
    text = render_sample(
        public_url=public_url, database_url=database_url, broker_url=broker_url, state_dir=state_dir
    )
    # The result must load: a bad value fails here, not at the server's first start.
    _validate(text)
    if str(out) == "-":
        typer.echo(text, nl=False)
        return
    if out.exists() and not force:
        msg = f"{out} exists (use --force to overwrite it)"
        raise ConfigError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Readable by its owner and group only: it may come to hold a broker password.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    typer.echo(f"wrote {out}; next: fieldlink ca init --config {out}")


def _validate(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "server.toml"
        path.write_text(text, encoding="utf-8")
        load_settings(ServerSettings, path, "server")
