"""server/upkeep.py: the periodic jobs, and the PKI's, with the clock moved, never waited for."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from server import metrics
from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.models import Device
from server.upkeep import FleetUpkeep, Job, PkiUpkeep, Upkeep
from shared.ids import utcnow


async def test_a_failing_job_is_logged_and_runs_again_when_woken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    ran = asyncio.Queue[int]()

    async def flaky() -> None:
        runs.append(len(runs))
        await ran.put(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    upkeep = Upkeep([Job("flaky", 3600.0, flaky)])
    with pytest.raises(ValueError, match="already registered"):
        upkeep.add(Job("flaky", 1.0, flaky))
    await upkeep.start()
    try:
        assert await ran.get() == 1  # at start
        upkeep.wake("flaky")  # not after an hour: now
        assert await ran.get() == 2
        upkeep.wake("unknown")  # ignored
    finally:
        await upkeep.stop()
    assert "upkeep job flaky failed" in caplog.text
    assert upkeep.job_names == ["flaky"]


async def test_a_job_added_while_running_starts_then_is_removed_and_waits_for_its_turn() -> None:
    ran = asyncio.Queue[str]()

    async def record(name: str) -> None:
        await ran.put(name)

    upkeep = Upkeep()
    await upkeep.start()
    try:
        upkeep.add(Job("now", 3600.0, lambda: record("now")))
        upkeep.add(Job("later", 3600.0, lambda: record("later"), at_start=False))
        assert await ran.get() == "now"  # added while running: started at once
        assert ran.empty()  # "later" waits for its interval (an hour)...
        upkeep.wake("later")  # ...or a wake-up
        assert await ran.get() == "later"
        await upkeep.remove("now", "later", "unknown")
        assert upkeep.job_names == []
        upkeep.wake("now")  # gone: nothing runs
        await asyncio.sleep(0)
        assert ran.empty()
    finally:
        await upkeep.stop()


def test_the_lifespan_runs_every_periodic_job_in_the_upkeep(settings: ServerSettings) -> None:
    """The PKI's, the liveness heartbeat and sweep, silent devices, rollups and retention,
    the re-check of live sessions' access, the operators' heartbeats, and the notification
    worker."""
    from fastapi.testclient import TestClient

    from server.main import create_app

    with TestClient(create_app(settings)) as client:
        upkeep = client.app.state.upkeep  # type: ignore[attr-defined]
        assert sorted(upkeep.job_names) == [
            "access",
            "broker-update",
            "liveness",
            "notify",
            "operator-heartbeat",
            "pki",
            "rollups-retention",
            "silent-devices",
        ]
        assert not hasattr(client.app.state.ingest, "sweep")  # type: ignore[attr-defined]
        # Withdrawing an access in this process wakes the upkeep's job.
        assert client.app.state.sessions.access.wake is not None  # type: ignore[attr-defined]
    # At shutdown the owners' jobs stopped before their owners (liveness, sessions, ingest).
    assert upkeep.job_names == ["broker-update", "pki"]


async def test_fleet_jobs_mark_silent_devices_and_set_the_gauges(tmp_path: Path) -> None:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        state_dir=tmp_path / "state",
        offline_after_s=60.0,
    )
    engine = make_engine(settings.database_url)
    create_schema(engine)
    now = utcnow()
    with Session(engine) as db:
        for device_id, seen in (("mfp-1", now - timedelta(minutes=5)), ("mfp-2", now)):
            db.add(
                Device(
                    id=device_id,
                    serial=device_id,
                    model="m",
                    type="mfp",
                    customer="c",
                    online=True,
                    last_seen=seen,
                )
            )
        db.commit()
    fleet = FleetUpkeep(settings, engine, clock=lambda: now)
    assert [job.name for job in fleet.jobs()] == ["silent-devices", "rollups-retention"]
    assert fleet.sweep_interval_s == 15.0  # a third of offline_after_s, at most 15 s
    assert [job.at_start for job in fleet.jobs()] == [True, False]
    assert await fleet.sweep() == ["mfp-1"]
    # Read from the gauges themselves: whichever registry serves them.
    assert metrics.DEVICES_ONLINE._value.get() == 1
    assert metrics.DEVICES_REGISTERED._value.get() == 2
    with Session(engine) as db:
        row = db.get(Device, "mfp-1")
        assert row is not None
        assert (row.online, row.online_reason) == (False, "silent")
    engine.dispose()


async def test_without_a_ca_the_jobs_do_nothing(tmp_path: Path) -> None:
    settings = ServerSettings(state_dir=tmp_path / "state")
    upkeep = PkiUpkeep(settings)
    assert await upkeep.pki_check() == []
    assert await upkeep.broker_update() is None
