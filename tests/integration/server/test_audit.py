"""The audit log's hash chain: intact when untouched, broken exactly where rows were tampered with.

Runs on SQLite and PostgreSQL; tampering is done with raw SQL, as an intruder would.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit
from server.models import AuditEntry

ROOT = Path(__file__).resolve().parents[3]


def _append(engine: Engine, count: int, *, actor: str = "alice") -> None:
    for number in range(count):
        with Session(engine) as session:
            audit.record(
                session,
                actor=actor,
                action="device.register",
                target=f"device:mfp-{number}",
                details={"number": number, "ratio": 0.1 * number, "big": 1e20},
                source_ip="192.0.2.7",
            )
            session.commit()


def _verify(engine: Engine) -> audit.VerifyResult:
    with Session(engine) as session:
        return audit.verify(session)


def _sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))


def test_an_empty_log_is_intact(db_engine: Engine) -> None:
    result = _verify(db_engine)
    assert result == audit.VerifyResult(True, 0)
    assert result.describe() == "audit log intact: 0 entries"


def test_an_untouched_chain_is_intact(db_engine: Engine) -> None:
    _append(db_engine, 5)
    result = _verify(db_engine)
    assert result.intact, result
    assert result.describe() == "audit log intact: 5 entries"
    with Session(db_engine) as session:
        entries, total = audit.list_entries(session, limit=10)
    assert total == 5
    assert [e.id for e in entries] == [5, 4, 3, 2, 1]
    assert entries[-1].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for later, earlier in itertools.pairwise(entries))


def test_an_edited_row_is_named(db_engine: Engine) -> None:
    _append(db_engine, 5)
    _sql(db_engine, "UPDATE audit_entry SET actor = 'mallory' WHERE id = 3")
    result = _verify(db_engine)
    assert (result.intact, result.broken_at) == (False, 3)
    assert result.describe() == (
        "audit log BROKEN at entry #3: its content does not match its hash"
    )


def test_edited_details_are_named(db_engine: Engine) -> None:
    _append(db_engine, 4)
    _sql(
        db_engine, "UPDATE audit_entry SET details = replace(details, 'ratio', 'rate') WHERE id = 2"
    )
    assert _verify(db_engine).broken_at == 2


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db_engine: Engine) -> None:
    _append(db_engine, 5)
    with Session(db_engine) as session:
        entry = session.get(AuditEntry, 3)
        assert entry is not None
        entry.actor = "mallory"
        entry.hash = audit.entry_hash(entry)
        session.add(entry)
        session.commit()
    result = _verify(db_engine)
    assert result.broken_at == 4
    assert result.reason == "its prev_hash is not the hash of the entry before it"


def test_a_deleted_row_is_named(db_engine: Engine) -> None:
    _append(db_engine, 5)
    _sql(db_engine, "DELETE FROM audit_entry WHERE id = 3")
    result = _verify(db_engine)
    assert result.describe() == "audit log BROKEN at entry #4: entry #3 before it is missing"


def test_a_deleted_first_row_is_named(db_engine: Engine) -> None:
    _append(db_engine, 3)
    _sql(db_engine, "DELETE FROM audit_entry WHERE id = 1")
    assert _verify(db_engine).broken_at == 2


def test_rows_cut_from_the_end_are_named(db_engine: Engine) -> None:
    _append(db_engine, 5)
    _sql(db_engine, "DELETE FROM audit_entry WHERE id >= 4")
    result = _verify(db_engine)
    assert result.describe() == "audit log BROKEN at entry #4: entries #4..#5 are missing"


def test_swapped_rows_are_named(db_engine: Engine) -> None:
    _append(db_engine, 5)
    _sql(
        db_engine,
        "UPDATE audit_entry SET id = -1 WHERE id = 2",
        "UPDATE audit_entry SET id = 2 WHERE id = 3",
        "UPDATE audit_entry SET id = 3 WHERE id = -1",
    )
    result = _verify(db_engine)
    assert (result.intact, result.broken_at) == (False, 2)


def test_a_rolled_back_append_leaves_no_trace(db_engine: Engine) -> None:
    _append(db_engine, 2)
    with Session(db_engine) as session:
        audit.record(session, actor="alice", action="user.create", target="user:bob")
        session.rollback()
    _append(db_engine, 1)
    result = _verify(db_engine)
    assert result == audit.VerifyResult(True, 3)


def test_concurrent_threads_keep_the_chain(db_engine: Engine) -> None:
    threads, per_thread = 6, 15
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            _append(db_engine, per_thread, actor=f"worker{index}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert _verify(db_engine) == audit.VerifyResult(True, threads * per_thread)


def test_an_append_waits_for_the_open_one_to_commit(db_engine: Engine) -> None:
    """The append lock is held until the caller commits; the next append then chains after it."""
    first = Session(db_engine)
    audit.record(first, actor="alice", action="user.create", target="user:bob")
    done = threading.Event()

    def second() -> None:
        with Session(db_engine) as session:
            audit.record(session, actor="carol", action="user.create", target="user:dave")
            session.commit()
        done.set()

    worker = threading.Thread(target=second)
    worker.start()
    try:
        assert not done.wait(0.5)  # blocked behind the uncommitted first append
        first.commit()
        assert done.wait(10)
    finally:
        first.close()
        worker.join()
    with Session(db_engine) as session:
        rows, _ = audit.list_entries(session)
        assert [(row.id, row.actor) for row in rows] == [(2, "carol"), (1, "alice")]
    assert _verify(db_engine) == audit.VerifyResult(True, 2)


def test_secrets_never_reach_the_table(db_engine: Engine) -> None:
    secrets = ["hunter2-password", "flk_abcdefghijklmnop", "s3cr3t-value", "enroll-me-please"]
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----"
    with Session(db_engine) as session:
        audit.record(
            session,
            actor="alice",
            action="user.create",
            target="user:bob",
            details={
                "password": secrets[0],
                "note": secrets[1],
                "nested": [{"client_secret": secrets[2], "enrollment_token": secrets[3]}],
                "key_pem": pem,
                "role": "operator",
            },
        )
        session.commit()
    with db_engine.connect() as connection:
        dump = repr(connection.execute(sa.text("SELECT * FROM audit_entry")).all())
    for secret in [*secrets, "MHcCAQEE"]:
        assert secret not in dump
    assert "operator" in dump
    assert _verify(db_engine).intact


def test_details_that_are_not_json_are_stored_as_text(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        entry = audit.record(
            session, actor="system", action="session.close", details={"path": ROOT, "when": None}
        )
        stored = entry.details
        session.commit()
    assert str(ROOT) in stored
    assert _verify(db_engine).intact


def test_list_filters(db_engine: Engine) -> None:
    _append(db_engine, 3, actor="alice")
    with Session(db_engine) as session:
        audit.record(session, actor="bob", action="device.revoke", target="device:mfp-1")
        audit.record(session, actor="bob", action="login", target="user:bob")
        session.commit()
        assert audit.list_entries(session, actor="bob")[1] == 2
        assert audit.list_entries(session, action="device.*")[1] == 4
        assert audit.list_entries(session, action="device%")[1] == 0
        assert audit.list_entries(session, target="device:mfp-1")[1] == 2
        rows, total = audit.list_entries(session, limit=2, offset=1)
        assert (total, [r.id for r in rows]) == (5, [4, 3])
