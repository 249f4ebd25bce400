"""Write a new migration from the difference between the models and the migrated schema.

Usage: ``python -m server.migrations.autogen MESSAGE REV_ID`` (``make migration``).
It migrates a scratch SQLite database to head, then autogenerates against it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from server.db import MIGRATIONS_DIR, make_engine


def main(argv: list[str]) -> None:
    """Autogenerate revision ``argv[1]`` with message ``argv[0]``."""
    message, rev_id = argv
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'autogen.db'}")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            command.revision(config, message=message, autogenerate=True, rev_id=rev_id)


if __name__ == "__main__":
    main(sys.argv[1:])
