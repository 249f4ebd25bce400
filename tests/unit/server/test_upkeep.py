"""server/upkeep.py: the periodic jobs, and the PKI's, with the clock moved, never waited for."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlmodel import Session, col, select

from provisioning.broker import BrokerTargets, write_broker_config
from provisioning.broker_update import load_update_state
from provisioning.ca import CertificateAuthority
from provisioning.pki import certificate_not_after
from provisioning.register import CRL_VALIDITY
from server import metrics
from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.models import AuditEntry, Device
from server.upkeep import FleetUpkeep, Job, PkiUpkeep, Upkeep
from shared.ids import utcnow
from tests.fixtures.pki import make_csr


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


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pki(tmp_path: Path) -> tuple[ServerSettings, CertificateAuthority, Path]:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", state_dir=tmp_path / "state"
    )
    ca = CertificateAuthority.init(settings.state_dir, hostnames=["mqtt.example.com"])
    written = write_broker_config(ca, tmp_path / "broker")
    targets = BrokerTargets.load(ca.paths.broker_targets)
    targets.reload_command = "true"
    targets.save(ca.paths.broker_targets)
    return settings, ca, written.directory


def _gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_the_pki_is_kept_alive_as_time_passes(
    pki: tuple[ServerSettings, CertificateAuthority, Path],
) -> None:
    settings, ca, broker_dir = pki
    start = utcnow()
    clock = Clock(start)
    reloaded: list[datetime] = []
    engine = make_engine(settings.database_url)
    create_schema(engine)
    upkeep = PkiUpkeep(
        settings,
        clock=clock,
        on_server_certificate=lambda: reloaded.append(clock()),
        engine=engine,
    )

    assert await upkeep.pki_check() == []  # all fresh
    assert _gauge("fieldlink_pki_expiry_timestamp_seconds", item="ca") == (
        ca.cert.not_valid_after_utc.timestamp()
    )
    broker_until = certificate_not_after(ca.paths.broker_cert)
    assert broker_until is not None
    assert _gauge("fieldlink_pki_expiry_timestamp_seconds", item="broker_cert") == (
        broker_until.timestamp()
    )

    # 340 days on, without a revocation: the CRL would expire in 25 days.
    clock.now = start + timedelta(days=340)
    assert await upkeep.pki_check() == ["crl"]
    next_update = ca.crl_next_update()
    assert next_update is not None
    assert next_update >= clock.now + CRL_VALIDITY - timedelta(seconds=1)
    assert _gauge("fieldlink_pki_expiry_timestamp_seconds", item="crl") == next_update.timestamp()
    assert (broker_dir / "crl.pem").read_bytes() == ca.paths.crl.read_bytes()  # the broker has it
    assert load_update_state(ca.paths).state == "applied"
    assert await upkeep.pki_check() == []  # once is enough

    # 800 days on: the broker's and the server's certificates are within 60 days of their end.
    clock.now = start + timedelta(days=800)
    assert await upkeep.pki_check() == ["crl", "broker", "server"]
    assert reloaded == [clock.now]
    renewed = x509.load_pem_x509_certificate(ca.paths.broker_cert.read_bytes())
    assert renewed.not_valid_after_utc > clock.now + timedelta(days=700)
    names = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.example.com" in names.get_values_for_type(x509.DNSName)  # names kept
    assert (broker_dir / "broker.pem").read_bytes() == ca.paths.broker_cert.read_bytes()
    assert (broker_dir / "broker.key").read_bytes() == ca.paths.broker_key.read_bytes()
    server_until = certificate_not_after(ca.paths.server_client_cert)
    assert server_until is not None
    assert server_until > clock.now + timedelta(days=700)
    with Session(engine) as db:
        entries = db.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("system", "pki.crl_refresh", "pki:crl"),
        ("system", "pki.crl_refresh", "pki:crl"),
        ("system", "pki.renew", "pki:broker_cert"),
        ("system", "pki.renew", "pki:server_cert"),
    ]
    engine.dispose()


async def test_devices_close_to_expiry_are_counted(
    pki: tuple[ServerSettings, CertificateAuthority, Path],
) -> None:
    settings, ca, _ = pki
    start = utcnow()
    ca.sign_device_csr(make_csr()[0], "mfp-old", now=start)
    ca.sign_device_csr(make_csr()[0], "mfp-renewed", now=start)
    ca.sign_device_csr(make_csr()[0], "mfp-renewed", now=start + timedelta(days=300))
    ca.sign_device_csr(make_csr()[0], "mfp-gone", now=start)
    ca.revoke_device("mfp-gone")
    clock = Clock(start + timedelta(days=380))  # 17 days before the first ones expire
    await PkiUpkeep(settings, clock=clock).pki_check()
    assert _gauge("fieldlink_device_certificates_expiring") == 1  # mfp-old only


async def test_a_pending_update_is_retried_by_the_server_or_handed_to_the_helper(
    pki: tuple[ServerSettings, CertificateAuthority, Path],
) -> None:
    settings, ca, _ = pki
    from provisioning.broker_update import REQUEST_FILE, update_broker

    targets = BrokerTargets.load(ca.paths.broker_targets)
    targets.reload_command = "false"
    targets.save(ca.paths.broker_targets)
    state = update_broker(ca.paths, device_id="mfp-x")
    assert state.state == "pending"
    upkeep = PkiUpkeep(settings)
    state_after = await upkeep.broker_update()
    assert state_after is not None
    assert state_after.attempts == 2
    assert _gauge("fieldlink_broker_revocations_pending") == 1

    targets.reload_by = "helper"
    targets.save(ca.paths.broker_targets)
    request = ca.paths.root / REQUEST_FILE
    request.unlink()
    again = await upkeep.broker_update()
    assert again is not None
    assert again.attempts == 2  # the server did not try itself...
    assert request.read_text() == f"{again.generation}\n"  # ...it woke the helper


async def test_without_a_ca_the_jobs_do_nothing(tmp_path: Path) -> None:
    settings = ServerSettings(state_dir=tmp_path / "state")
    upkeep = PkiUpkeep(settings)
    assert await upkeep.pki_check() == []
    assert await upkeep.broker_update() is None
