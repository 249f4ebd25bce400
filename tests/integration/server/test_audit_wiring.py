"""What the server does to devices and users lands in the audit chain, without secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from provisioning.ca import CertificateAuthority
from server.config import ServerSettings

Auth = Callable[[str], dict[str, str]]


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_device_lifecycle_is_audited_and_the_chain_holds(
    client: TestClient, auth: Auth, settings: ServerSettings
) -> None:
    CertificateAuthority.init(settings.state_dir)
    admin = auth("admin")
    body = {"serial": "A1", "model": "m", "type": "server", "customer": "c"}
    token = client.post("/api/v1/devices", json=body, headers=admin).json()["enrollment_token"]
    assert (
        client.post("/api/v1/enroll", json={"token": token, "csr_pem": _csr()}).status_code == 200
    )
    assert client.post("/api/v1/devices/server-a1/revoke", headers=admin).status_code == 202
    fresh = client.post("/api/v1/devices/server-a1/enrollment-token", headers=admin)
    assert fresh.status_code == 201

    entries = client.get("/api/v1/audit", params={"limit": 100}, headers=admin).json()["items"]
    actions = [(e["actor"], e["action"], e["target"]) for e in reversed(entries)]
    assert ("admin1", "device.register", "device:server-a1") in actions
    assert ("device:server-a1", "device.enroll", "device:server-a1") in actions
    assert ("admin1", "device.revoke", "device:server-a1") in actions
    assert ("admin1", "device.enrollment_token", "device:server-a1") in actions
    assert any(a[1] == "user.create" for a in actions)
    dump = json.dumps(entries)
    assert token not in dump
    assert fresh.json()["enrollment_token"] not in dump
    verified = client.get("/api/v1/audit/verify", headers=admin).json()
    assert verified["intact"] is True


def test_audit_head_prints_the_newest_hash(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndatabase_url = "sqlite:///{tmp_path / "db.sqlite"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    run = [sys.executable, "-m", "shared"]
    empty = subprocess.run(
        [*run, "audit", "head", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert empty.stdout.strip() == "audit log empty"
    subprocess.run(
        [*run, "user", "add", "ann", "--config", str(config)],
        input="long-password\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    head = subprocess.run(
        [*run, "audit", "head", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    number, digest = head.stdout.split()
    assert number == "#1"
    assert len(digest) == 64
