"""``fieldlink audit verify`` and ``list`` on a server's database, run as real processes.

The part of tests/unit/server/test_audit_cli.py that leaves the test's process
(it tries a PostgreSQL connection); the in-process rest stays there.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.cli import fieldlink


def test_verify_without_a_reachable_database_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ndatabase_url = "postgresql+psycopg://nobody@127.0.0.1:1/none"\n')
    done = fieldlink("audit", "verify", "--config", str(bad))
    assert done.returncode != 0
    assert done.stderr.startswith("error: cannot reach the database")
    assert "Traceback" not in done.stderr
