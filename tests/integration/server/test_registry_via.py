"""Devices watched over the network through a site gateway: ``via`` in the registry.

The API (422 with a clear message for a bad gateway), the command line (one line),
and the registry itself on SQLite and PostgreSQL (the ``database_url`` params).

The part of tests/unit/server/test_registry_via.py that leaves the test's process
(it runs on PostgreSQL too); the in-process rest stays there.
"""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from server import crud
from server.db import create_schema, make_engine
from server.ingest.via import gateway_of
from server.models import DeviceCreate
from tests.fixtures.watched_devices import GATEWAY, PRINTER


def test_the_registry_keeps_via_and_inventory(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            crud.create_device(session, data=DeviceCreate.model_validate(GATEWAY))
            device = crud.create_device(session, data=DeviceCreate.model_validate(PRINTER))
            device.inventory = {"serial": "XK-0042", "sys_descr": "Imagio MP 6055 v1.02"}
            session.add(device)
            session.commit()
        with Session(engine) as session:
            watched = crud.watched_by(session, gateway_id="server-site-gw")
            assert [d.id for d in watched] == ["mfp-3f-east"]
            assert watched[0].inventory == {
                "serial": "XK-0042",
                "sys_descr": "Imagio MP 6055 v1.02",
            }
        # Where a watched device's resend request goes (server.ingest.resend).
        assert gateway_of(engine, "mfp-3f-east") == "server-site-gw"
        assert gateway_of(engine, "server-site-gw") is None
        assert gateway_of(engine, "no-such-device") is None
    finally:
        engine.dispose()


def test_revoking_a_gateway_takes_its_watched_devices_offline_at_once(
    database_url: str, tmp_path: Path
) -> None:
    from provisioning.ca import CertificateAuthority
    from server.models.telemetry import DeviceEventRecord
    from tests.fixtures.pki import make_csr

    ca = CertificateAuthority.init(tmp_path / "state")
    ca.sign_device_csr(make_csr()[0], "server-site-gw")
    other_gateway = {**GATEWAY, "id": "server-other-gw", "serial": "GW-2"}
    elsewhere = {**PRINTER, "id": "mfp-elsewhere", "serial": "XK-9", "via": "server-other-gw"}
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            for data in (GATEWAY, other_gateway, PRINTER, elsewhere):
                device = crud.create_device(session, data=DeviceCreate.model_validate(data))
                device.online = True
                device.online_reason = None
                session.add(device)
            session.commit()
            crud.revoke_device(session, ca=ca, device_id="server-site-gw", actor="admin")
        with Session(engine) as session:
            rows = {d.id: d for d in crud.list_devices(session)[0]}
            assert (rows["server-site-gw"].online, rows["server-site-gw"].online_reason) == (
                False,
                "revoked",
            )
            assert (rows["mfp-3f-east"].online, rows["mfp-3f-east"].online_reason) == (
                False,
                "gateway_revoked",
            )
            # Another gateway's printer is none of this revocation's business.
            assert rows["mfp-elsewhere"].online
            events = session.exec(
                select(DeviceEventRecord).where(DeviceEventRecord.device_id == "mfp-3f-east")
            ).all()
            assert [(e.type, e.body) for e in events] == [
                ("offline", {"reason": "gateway_revoked", "gateway": "server-site-gw"})
            ]
    finally:
        engine.dispose()
