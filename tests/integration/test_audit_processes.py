"""The audit chain written by several real processes at once (SQLite and PostgreSQL).

Moved from tests/unit/server/test_audit.py (it starts Python child processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _verify(engine: Engine) -> audit.VerifyResult:
    with Session(engine) as session:
        return audit.verify(session)


_APPENDER = """
import sys
from sqlmodel import Session
from server import audit
from server.db import make_engine

engine = make_engine(sys.argv[1])
for number in range(int(sys.argv[2])):
    with Session(engine) as session:
        audit.record(session, actor=sys.argv[3], action="session.open", details={"n": number})
        session.commit()
engine.dispose()
"""


def test_concurrent_processes_keep_the_chain(db_engine: Engine) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, url, "20", f"process{i}"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert _verify(db_engine) == audit.VerifyResult(True, 60)
