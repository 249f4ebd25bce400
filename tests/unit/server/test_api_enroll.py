"""POST /api/v1/enroll: the token and CSR checks, as the API answers them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from provisioning.ca import CertificateAuthority
from server.config import ServerSettings
from server.models import Device
from shared.ids import utcnow

Auth = Callable[[str], dict[str, str]]
DEVICE = {"serial": "XK-9", "model": "MP", "type": "mfp", "customer": "Acme"}


def _csr(
    cn: str = "whatever", key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _register(client: TestClient, auth: Auth) -> str:
    answer = client.post("/api/v1/devices", json=DEVICE, headers=auth("admin"))
    assert answer.status_code == 201
    token: str = answer.json()["enrollment_token"]
    return token


def test_without_a_ca_enrollment_is_unavailable(client: TestClient, auth: Auth) -> None:
    token = _register(client, auth)
    answer = client.post("/api/v1/enroll", json={"token": token, "csr_pem": _csr()})
    assert answer.status_code == 503
    assert token not in answer.text


def test_enroll_once_then_used(client: TestClient, auth: Auth, settings: ServerSettings) -> None:
    CertificateAuthority.init(settings.state_dir)
    token = _register(client, auth)
    first = client.post(
        "/api/v1/enroll", json={"token": token, "csr_pem": _csr("mfp-someone-else")}
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["device_id"] == "mfp-xk-9"
    cert = x509.load_pem_x509_certificate(body["cert_pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mfp-xk-9"
    assert "BEGIN PUBLIC KEY" in body["command_public_key_pem"]
    second = client.post("/api/v1/enroll", json={"token": token, "csr_pem": _csr()})
    assert second.status_code == 409
    assert "already used" in second.json()["detail"]
    assert token not in second.text


def test_unknown_expired_and_bad_csr(
    client: TestClient, auth: Auth, settings: ServerSettings, engine: Engine
) -> None:
    CertificateAuthority.init(settings.state_dir)
    unknown = client.post("/api/v1/enroll", json={"token": "nope", "csr_pem": _csr()})
    assert unknown.status_code == 401
    token = _register(client, auth)
    bad = client.post("/api/v1/enroll", json={"token": token, "csr_pem": "not a csr"})
    assert bad.status_code == 400
    weak_key = rsa.generate_private_key(65537, 1024)  # noqa: S505  (the weak key is the point)
    weak = client.post("/api/v1/enroll", json={"token": token, "csr_pem": _csr(key=weak_key)})
    assert weak.status_code == 400
    with Session(engine) as session:
        device = session.get(Device, "mfp-xk-9")
        assert device is not None
        assert device.enrolled_at is None  # nothing was issued
        device.enrollment_expires_at = utcnow() - timedelta(seconds=1)
        session.add(device)
        session.commit()
    expired = client.post("/api/v1/enroll", json={"token": token, "csr_pem": _csr()})
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]


def test_missing_fields_are_422(client: TestClient) -> None:
    answer = client.post("/api/v1/enroll", json={"token": "x"})
    assert answer.status_code == 422
    assert "csr_pem" in answer.text


def _proof(key: ec.EllipticCurvePrivateKey, csr_pem: str) -> str:
    import base64

    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    signature = key.sign(der, ec.ECDSA(hashes.SHA256()))
    return base64.urlsafe_b64encode(signature).decode().rstrip("=")


def test_renewal_needs_the_current_key_and_an_unrevoked_device(
    client: TestClient, auth: Auth, settings: ServerSettings
) -> None:
    CertificateAuthority.init(settings.state_dir)
    token = _register(client, auth)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = client.post(
        "/api/v1/enroll", json={"token": token, "csr_pem": _csr(key=key)}
    ).json()["cert_pem"]
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_csr = _csr(key=new_key)

    stranger = ec.generate_private_key(ec.SECP256R1())
    refused = client.post(
        "/api/v1/renew",
        json={"cert_pem": cert_pem, "csr_pem": new_csr, "proof": _proof(stranger, new_csr)},
    )
    assert refused.status_code == 403

    renewed = client.post(
        "/api/v1/renew",
        json={"cert_pem": cert_pem, "csr_pem": new_csr, "proof": _proof(key, new_csr)},
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["device_id"] == "mfp-xk-9"
    new_cert = x509.load_pem_x509_certificate(renewed.json()["cert_pem"].encode())
    assert new_cert.public_key() == new_key.public_key()
    detail = client.get("/api/v1/devices/mfp-xk-9", headers=auth("operator")).json()
    assert detail["revoked_at"] is None
    assert int(detail["cert_serial"], 16) == new_cert.serial_number

    revoked = client.post("/api/v1/devices/mfp-xk-9/revoke", headers=auth("admin"))
    assert revoked.status_code == 202
    again = client.post(
        "/api/v1/renew",
        json={
            "cert_pem": renewed.json()["cert_pem"],
            "csr_pem": new_csr,
            "proof": _proof(new_key, new_csr),
        },
    )
    assert again.status_code == 403
    entries = client.get("/api/v1/audit", headers=auth("admin")).json()["items"]
    refusals = [e for e in entries if e["action"] == "device.renew_refused"]
    assert len(refusals) == 2  # the stranger's proof, and the revoked device
