"""The device CA: files and permissions, CSR signing, revocation, renewal."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from provisioning.ca import CertificateAuthority
from provisioning.pki import (
    SERVER_CLIENT_CN,
    BadCsr,
    CaExists,
    CaNotInitialized,
    RenewalRefused,
    UnknownCertificate,
    common_name,
    parse_serial,
)
from shared.errors import InvalidDeviceId
from shared.ids import is_device_id
from shared.signing import public_key_pem
from tests.fixtures.pki import make_csr


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(
        tmp_path_factory.mktemp("state"), hostnames=["broker.example.com", "10.0.0.5"]
    )


def test_init_writes_secrets_0600_in_a_private_folder(ca: CertificateAuthority) -> None:
    paths = ca.paths
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    for secret in (paths.ca_key, paths.command_key, paths.broker_key, paths.server_client_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    for public in (paths.ca_cert, paths.crl, paths.command_public_key, paths.broker_cert):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644, public
    # No temporary file is left behind.
    assert not list(paths.root.glob(".*.tmp"))


def test_ca_is_p256_and_command_key_is_a_separate_ed25519_key(ca: CertificateAuthority) -> None:
    assert isinstance(ca.cert.public_key(), ec.EllipticCurvePublicKey)
    assert ca.key_type == "ec-p256"
    command_key = ca.command_signing_key()
    assert isinstance(command_key, ed25519.Ed25519PrivateKey)
    assert public_key_pem(command_key).decode() == ca.command_public_key_pem


def test_init_refuses_to_replace_an_existing_ca(ca: CertificateAuthority) -> None:
    with pytest.raises(CaExists, match="--force"):
        CertificateAuthority.init(ca.paths.root.parent)


def test_force_replaces_the_ca(tmp_path: Path) -> None:
    first = CertificateAuthority.init(tmp_path)
    second = CertificateAuthority.init(tmp_path, force=True)
    assert first.cert.serial_number != second.cert.serial_number
    assert CertificateAuthority.load(tmp_path).cert == second.cert


def test_load_without_init_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(CaNotInitialized, match="fieldlink ca init"):
        CertificateAuthority.load(tmp_path)


def test_device_certificate_takes_the_device_id_whatever_the_csr_asks(
    ca: CertificateAuthority,
) -> None:
    csr_pem, key = make_csr(cn="fieldlink_server")
    issued = ca.sign_device_csr(csr_pem, "mfp-0042")
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert common_name(cert) == "mfp-0042"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    cert.verify_directly_issued_by(ca.cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert issued.not_after - issued.not_before <= timedelta(days=398)
    assert issued in ca.issued_certificates("mfp-0042")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa2048"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    ],
)
def test_accepted_device_key_types(ca: CertificateAuthority, key: object) -> None:
    csr_pem, _ = make_csr(key())  # type: ignore[operator]
    assert ca.sign_device_csr(csr_pem, "srv-keytypes").common_name == "srv-keytypes"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param(
            lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505 - refused on purpose
            "1024 bits",
            id="rsa1024",
        ),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), "secp521r1", id="p521"),
    ],
)
def test_weak_or_unsupported_keys_are_refused(
    ca: CertificateAuthority, key: object, message: str
) -> None:
    csr_pem, _ = make_csr(key())  # type: ignore[operator]
    with pytest.raises(BadCsr, match=message):
        ca.sign_device_csr(csr_pem, "mfp-weak")


def test_csr_with_a_broken_signature_is_refused(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr()
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-5] ^= 0x01  # inside the signature
    tampered = (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der)).decode()
        + "-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(BadCsr):
        ca.sign_device_csr(tampered, "mfp-tampered")


@pytest.mark.parametrize("garbage", ["", "hello", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"])
def test_garbage_csr_is_refused(ca: CertificateAuthority, garbage: str) -> None:
    with pytest.raises(BadCsr, match="not a PEM"):
        ca.sign_device_csr(garbage, "mfp-garbage")


def test_invalid_device_id_is_refused(ca: CertificateAuthority) -> None:
    csr_pem, _ = make_csr()
    with pytest.raises(InvalidDeviceId):
        ca.sign_device_csr(csr_pem, "fieldlink_server")


def test_server_identity_cn_is_never_a_device_id(ca: CertificateAuthority) -> None:
    assert not is_device_id(SERVER_CLIENT_CN)
    cert = x509.load_pem_x509_certificate(ca.paths.server_client_cert.read_bytes())
    assert common_name(cert) == SERVER_CLIENT_CN
    cert.verify_directly_issued_by(ca.cert)


def test_broker_certificate_names_local_and_configured_hosts(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.paths.broker_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.example.com"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.0.0.5",
    }
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_revoke_device_puts_all_its_certificates_on_the_crl(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    first = ca.sign_device_csr(make_csr()[0], "img-0001")
    second = ca.sign_device_csr(make_csr()[0], "img-0001")
    keep = ca.sign_device_csr(make_csr()[0], "img-0002")
    assert sorted(ca.revoke_device("img-0001")) == sorted([first.serial, second.serial])
    assert ca.revoke_device("img-0001") == []  # already revoked: nothing new
    crl = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(first.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(second.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(keep.serial) is None
    assert {entry.device_id for entry in ca.revoked()} == {"img-0001"}


def test_revoke_by_serial_accepts_openssl_notation(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    issued = ca.sign_device_csr(make_csr()[0], "srv-0001")
    colons = ":".join(f"{byte:02X}" for byte in issued.serial.to_bytes(20, "big"))
    assert ca.revoke_serials([colons]) == [issued.serial]
    assert issued.serial in ca.revoked_serials()
    with pytest.raises(UnknownCertificate, match="not a certificate serial"):
        parse_serial("xyz")
    with pytest.raises(UnknownCertificate, match="no certificate"):
        ca.revoke_device("srv-never")


def test_crl_number_rises_and_refresh_only_when_due(tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    ca = CertificateAuthority.init(tmp_path, now=now)

    def crl_number() -> int:
        crl = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    before = crl_number()
    assert not ca.refresh_crl_if_due(now + timedelta(days=1))
    assert crl_number() == before
    assert ca.refresh_crl_if_due(now + timedelta(days=31))
    assert crl_number() == before + 1


def _proof(key: ec.EllipticCurvePrivateKey, csr_pem: str) -> str:
    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(key.sign(der, ec.ECDSA(hashes.SHA256()))).decode()


def test_renewal_with_the_current_certificate_and_its_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    old_csr, old_key = make_csr()
    current = ca.sign_device_csr(old_csr, "mfp-renew")
    new_csr, _ = make_csr(cn="anything")
    assert isinstance(old_key, ec.EllipticCurvePrivateKey)
    renewed = ca.renew_device_certificate(current.cert_pem, new_csr, _proof(old_key, new_csr))
    assert renewed.common_name == "mfp-renew"
    assert renewed.serial != current.serial


def test_renewal_refused_without_proof_of_the_current_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path)
    current = ca.sign_device_csr(make_csr()[0], "mfp-renew")
    new_csr, new_key = make_csr()
    assert isinstance(new_key, ec.EllipticCurvePrivateKey)
    # Signed by the new key instead of the current one: someone who only has the certificate.
    with pytest.raises(RenewalRefused, match="proof"):
        ca.renew_device_certificate(current.cert_pem, new_csr, _proof(new_key, new_csr))


def test_renewal_refused_for_revoked_expired_or_foreign_certificates(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(tmp_path / "a")
    other = CertificateAuthority.init(tmp_path / "b")
    csr, key = make_csr()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    new_csr, _ = make_csr()
    proof = _proof(key, new_csr)

    foreign = other.sign_device_csr(csr, "mfp-renew")
    with pytest.raises(RenewalRefused, match="not issued by this CA"):
        ca.renew_device_certificate(foreign.cert_pem, new_csr, proof)

    expired = ca.sign_device_csr(csr, "mfp-renew", validity=timedelta(days=1), now=now)
    with pytest.raises(RenewalRefused, match="expired"):
        ca.renew_device_certificate(expired.cert_pem, new_csr, proof, now=now + timedelta(days=2))

    current = ca.sign_device_csr(csr, "mfp-renew")
    ca.revoke_serials([current.serial])
    with pytest.raises(RenewalRefused, match="revoked"):
        ca.renew_device_certificate(current.cert_pem, new_csr, proof)

    server_cert = ca.paths.server_client_cert.read_text()
    with pytest.raises(RenewalRefused, match="only device"):
        ca.renew_device_certificate(server_cert, new_csr, proof)


def test_rsa_fallback_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path, key_type="rsa-2048")
    assert ca.key_type == "rsa-2048"
    assert isinstance(ca.cert.public_key(), rsa.RSAPublicKey)
    broker = x509.load_pem_x509_certificate(ca.paths.broker_cert.read_bytes())
    assert isinstance(broker.public_key(), rsa.RSAPublicKey)
    issued = ca.sign_device_csr(make_csr()[0], "mfp-rsa")
    x509.load_pem_x509_certificate(issued.cert_pem.encode()).verify_directly_issued_by(ca.cert)
