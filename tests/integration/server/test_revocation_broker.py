"""Revocation is one outcome: 202 with the broker's state, retried by the upkeep, shown everywhere.

The broker's reload here is a configured command (``false``, then ``true``), so
the retry is seen without a broker; the integration tests use a real Mosquitto.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from provisioning.broker import BrokerTargets, write_broker_config
from provisioning.ca import CertificateAuthority
from server.config import ServerSettings
from server.upkeep import PkiUpkeep
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.pki import make_csr

Auth = Callable[[str], dict[str, str]]
DEVICE = {"serial": "RV-1", "model": "MP", "type": "mfp", "customer": "Acme"}


def _set_reload(ca: CertificateAuthority, command: str) -> None:
    targets = BrokerTargets.load(ca.paths.broker_targets)
    targets.reload_command = command
    targets.save(ca.paths.broker_targets)


def _enrolled(client: TestClient, auth: Auth) -> str:
    token = client.post("/api/v1/devices", json=DEVICE, headers=auth("admin")).json()[
        "enrollment_token"
    ]
    enrolled = client.post("/api/v1/enroll", json={"token": token, "csr_pem": make_csr()[0]})
    assert enrolled.status_code == 200, enrolled.text
    device_id: str = enrolled.json()["device_id"]
    return device_id


def _device_page(client: TestClient, auth: Auth, device_id: str) -> str:
    auth("operator")
    login = client.post(
        "/login",
        data={"username": "operator1", "password": PASSWORD, "next": "/desk"},
        follow_redirects=False,
    )
    assert login.status_code == 303, login.text
    page = client.get(f"/devices/{device_id}")
    assert page.status_code == 200
    assert f"<h1>{device_id}" in page.text or device_id in page.text
    return page.text


def _gauge(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def test_revoke_answers_202_pending_then_the_upkeep_applies_it(
    client: TestClient, auth: Auth, settings: ServerSettings, tmp_path: Path
) -> None:
    ca = CertificateAuthority.init(settings.state_dir)
    written = write_broker_config(ca, tmp_path / "broker")
    _set_reload(ca, "false")  # the broker cannot be told yet
    device_id = _enrolled(client, auth)

    answer = client.post(f"/api/v1/devices/{device_id}/revoke", headers=auth("admin"))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["revoked_at"] is not None
    assert body["online"] is False
    broker = body["broker"]
    assert broker["state"] == "pending"
    assert broker["pending_since"] is not None
    assert broker["attempts"] == 1
    assert "reload command failed (false)" in broker["last_error"]
    # Revoked at once on the server's side, whatever the broker does.
    assert client.get(f"/api/v1/devices/{device_id}", headers=auth("operator")).json()["revoked_at"]
    assert _gauge(client, "fieldlink_broker_revocations_pending") == 1
    assert _gauge(client, "fieldlink_broker_update_failed_attempts") == 1
    page = _device_page(client, auth, device_id)
    assert "revocation pending since" in page
    assert "reload command failed" in page

    _set_reload(ca, "true")  # the broker is back
    upkeep = client.app.state.upkeep  # type: ignore[attr-defined]
    client.portal.call(upkeep.run_once, PkiUpkeep.BROKER_JOB)  # type: ignore[union-attr]
    assert _gauge(client, "fieldlink_broker_revocations_pending") == 0
    assert _gauge(client, "fieldlink_broker_update_pending_since_timestamp_seconds") == 0
    assert f"user {device_id}\ntopic deny" in written.acl.read_text()
    page = _device_page(client, auth, device_id)
    assert "revocation pending" not in page


def test_revoke_applied_at_once_when_the_broker_answers(
    client: TestClient, auth: Auth, settings: ServerSettings, tmp_path: Path
) -> None:
    ca = CertificateAuthority.init(settings.state_dir)
    write_broker_config(ca, tmp_path / "broker")
    _set_reload(ca, "true")
    device_id = _enrolled(client, auth)
    answer = client.post(f"/api/v1/devices/{device_id}/revoke", headers=auth("admin"))
    assert answer.status_code == 202
    assert answer.json()["broker"]["state"] == "applied"
    assert answer.json()["broker"]["last_error"] is None


def test_revoke_without_a_managed_broker_says_unmanaged(
    client: TestClient, auth: Auth, settings: ServerSettings
) -> None:
    CertificateAuthority.init(settings.state_dir)
    device_id = _enrolled(client, auth)
    answer = client.post(f"/api/v1/devices/{device_id}/revoke", headers=auth("admin"))
    assert answer.status_code == 202
    assert answer.json()["broker"]["state"] == "unmanaged"


def test_revoke_is_for_admins_and_known_devices(
    client: TestClient, auth: Auth, settings: ServerSettings
) -> None:
    CertificateAuthority.init(settings.state_dir)
    device_id = _enrolled(client, auth)
    refused = client.post(f"/api/v1/devices/{device_id}/revoke", headers=auth("operator"))
    assert refused.status_code == 403
    unknown = client.post("/api/v1/devices/mfp-nobody/revoke", headers=auth("admin"))
    assert unknown.status_code == 404
    assert "detail" in unknown.json()


def test_cli_revoke_exits_0_and_says_the_broker_has_not_applied_it(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}

    def fieldlink(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared", *args, "--config", str(config)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    assert fieldlink("ca", "init").returncode == 0
    done = fieldlink("broker-config", "--out", str(tmp_path / "broker"))
    assert done.returncode == 0, done.stderr
    assert "revocations and renewals reach the broker through the server" in done.stdout
    added = fieldlink("device", "add", "--serial", "S1", "--model", "M", "--type", "mfp",
                      "--customer", "C", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    ca = CertificateAuthority.load(tmp_path / "state")
    ca.sign_device_csr(make_csr()[0], "mfp-s1")

    revoked = fieldlink("device", "revoke", "mfp-s1")
    assert revoked.returncode == 0, revoked.stderr
    lines = revoked.stdout.splitlines()
    assert lines[0] == "revoked mfp-s1: the server refuses it from now on"
    assert lines[1].startswith("broker: pending since ")
    pid_file = tmp_path / "broker" / "run" / "mosquitto.pid"
    assert lines[2] == f"last error: cannot read the broker's pid from {pid_file}"

    again = fieldlink("device", "revoke", "mfp-nobody")
    assert again.returncode != 0
    assert again.stderr.strip().startswith("error: ")
    assert len(again.stderr.strip().splitlines()) == 1
