"""server/upkeep.py: the periodic jobs, and the PKI's, with the clock moved, never waited for.

The part of tests/unit/server/test_upkeep.py that leaves the test's process
(its PKI runs real programs); the in-process rest stays there.
"""

from __future__ import annotations

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
from server.models import AuditEntry
from server.upkeep import PkiUpkeep
from shared.ids import utcnow
from tests.fixtures.pki import make_csr


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
