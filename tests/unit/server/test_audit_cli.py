"""``fieldlink audit verify`` and ``list`` on a server's database, run as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit
from server.db import create_schema, make_engine
from tests.fixtures.cli import (
    config_fixture,  # noqa: F401 - the `config` fixture
    fieldlink,
)


@pytest.fixture
def engine(tmp_path: Path, config: Path) -> Iterator[Engine]:
    """The database the config names, migrated, with three entries."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    with Session(engine) as session:
        for number in range(3):
            audit.record(
                session,
                actor=audit.cli_actor(),
                action="user.create",
                target=f"user:u{number}",
                details={"role": "operator"},
            )
        audit.record(session, actor="system", action="session.close", target="session:s1")
        session.commit()
    try:
        yield engine
    finally:
        engine.dispose()


def test_verify_intact_exits_0(config: Path, engine: Engine) -> None:
    done = fieldlink("audit", "verify", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "audit log intact: 4 entries\n"


def test_verify_broken_exits_1_with_one_line(config: Path, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM audit_entry WHERE id = 2"))
    done = fieldlink("audit", "verify", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout == "audit log BROKEN at entry #3: entry #2 before it is missing\n"
    assert "Traceback" not in done.stderr


def test_list_newest_first_with_filters(config: Path, engine: Engine) -> None:
    done = fieldlink("audit", "list", "--config", str(config), "--limit", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("#4 ")
    assert "system  session.close  session:s1" in lines[0]
    assert lines[1].startswith("#3 ")
    assert lines[-1] == "(2 of 4 entries)"
    only = fieldlink("audit", "list", "--config", str(config), "--action", "user.create")
    assert only.stdout.splitlines()[-1] == "(3 of 3 entries)"
    assert "cli:" in only.stdout
    assert '{"role":"operator"}' in only.stdout
