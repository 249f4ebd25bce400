"""The unit tests run in process: a test here that starts a program or connects to PostgreSQL fails.

Such a test belongs under ``tests/integration`` (docs/testing.md). The guard wraps
``subprocess.Popen`` (which ``subprocess.run``, ``asyncio.create_subprocess_exec`` and
``create_subprocess_shell`` all go through), ``os.system``, ``os.posix_spawn``, ``os.fork``
and psycopg's connects; it raises at once and, in case the code under test swallows the
error, fails the test at its teardown too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

RULE = "tests/unit runs in process only: move this test to tests/integration (docs/testing.md)"


class OutOfProcessError(RuntimeError):
    """A unit test tried to start a program or reach PostgreSQL."""


@pytest.fixture(autouse=True)
def _in_process_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if it spawns a subprocess or connects to PostgreSQL."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: object, **kwargs: object) -> Any:
            attempts.append(f"{what}{_first(args)}")
            raise OutOfProcessError(f"{what}{_first(args)}: {RULE}")

        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess"))
    monkeypatch.setattr(os, "system", refuse("os.system"))
    monkeypatch.setattr(os, "posix_spawn", refuse("os.posix_spawn"))
    monkeypatch.setattr(os, "posix_spawnp", refuse("os.posix_spawnp"))
    monkeypatch.setattr(os, "fork", refuse("os.fork"))
    monkeypatch.setattr(psycopg, "connect", refuse("PostgreSQL connect"))
    monkeypatch.setattr(psycopg.Connection, "connect", refuse("PostgreSQL connect"))
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse("PostgreSQL connect"))
    yield
    if attempts:
        pytest.fail(f"{'; '.join(attempts)}: {RULE}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_cluster() -> None:
    """No PostgreSQL for unit tests (the real one is tests/conftest.py's, for integration)."""
    pytest.fail(f"the test asks for PostgreSQL: {RULE}", pytrace=False)


def _first(args: tuple[object, ...]) -> str:
    """`` (argv)`` of a refused call, for the message."""
    shown = [a for a in args if not isinstance(a, subprocess.Popen)]
    return f" ({shown[0]!r})" if shown else ""
