"""Login throttling and lockout, API tokens, logout: on the real app and a real database.

The part of tests/unit/server/test_auth_api.py that leaves the test's process
(it runs on PostgreSQL too); the in-process rest stays there.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlmodel import Session

from server.db import create_schema, make_engine
from server.logins import LoginPolicy, count_failure


def test_concurrent_failures_all_count(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        policy = LoginPolicy()
        now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
        errors: list[BaseException] = []

        def fail() -> None:
            try:
                with Session(engine) as session:
                    count_failure(session, "user:bob", now=now, policy=policy, limit=100)
                    session.commit()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=fail) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with Session(engine) as session:
            failures, lock = count_failure(session, "user:bob", now=now, policy=policy, limit=13)
            session.commit()
        assert failures == 13
        assert lock == now + policy.lockout
    finally:
        engine.dispose()
