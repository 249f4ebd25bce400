"""What the CA issued and revoked: the ``issued/`` folder, ``revoked.json`` and the CRL.

:class:`provisioning.ca.CertificateAuthority` is a register that also signs
device and service certificates; the register signs only its CRL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509

from provisioning.certificates import PrivateKey, build_crl
from provisioning.pki import (
    IssuedCertificate,
    PkiPaths,
    RevokedEntry,
    UnknownCertificate,
    locked,
    parse_serial,
    read_revocations,
    write_revocations,
)
from shared.ids import check_device_id, is_device_id, utcnow
from shared.signing import write_file_atomic

logger = logging.getLogger(__name__)

#: How long a CRL stays valid. OpenSSL refuses every client once the broker's
#: CRL is past its next update, so it is long, and refreshed on every change
#: and by :meth:`CertificateRegister.refresh_crl_if_due`.
CRL_VALIDITY: Final = timedelta(days=365)
CRL_REFRESH_AFTER: Final = timedelta(days=30)


class CertificateRegister:
    """The certificates one CA issued and revoked, backed by the files under ``state_dir/pki``."""

    def __init__(self, paths: PkiPaths, cert: x509.Certificate, key: PrivateKey) -> None:
        self.paths = paths
        self.cert = cert
        self._key = key

    def _record(self, cert: x509.Certificate) -> IssuedCertificate:
        issued = IssuedCertificate.from_certificate(cert)
        if is_device_id(issued.common_name):
            self.paths.issued.mkdir(mode=0o700, exist_ok=True)
            write_file_atomic(
                self.paths.issued / f"{issued.common_name}.{issued.serial_hex}.pem",
                issued.cert_pem.encode(),
                mode=0o644,
            )
        return issued

    # --- listing --------------------------------------------------------------------------

    def issued_certificates(self, device_id: str | None = None) -> list[IssuedCertificate]:
        """Certificates issued to devices (to one device when ``device_id`` is given)."""
        if not self.paths.issued.exists():
            return []
        pattern = f"{device_id}.*.pem" if device_id else "*.pem"
        found = []
        for path in sorted(self.paths.issued.glob(pattern)):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            found.append(IssuedCertificate.from_certificate(cert))
        return sorted(found, key=lambda issued: issued.not_before)

    # --- revocation -----------------------------------------------------------------------

    def revoked(self) -> list[RevokedEntry]:
        """Every revoked serial, oldest revocation first."""
        return sorted(read_revocations(self.paths)[1].values(), key=lambda entry: entry.revoked_at)

    def revoked_serials(self) -> set[int]:
        """The serials on the CRL."""
        return set(read_revocations(self.paths)[1])

    def _write_crl_locked(
        self, now: datetime, add: Iterable[RevokedEntry] = ()
    ) -> tuple[bytes, list[int]]:
        crl_number, entries = read_revocations(self.paths)
        added = [entry.serial for entry in add if entry.serial not in entries]
        for entry in add:
            entries.setdefault(entry.serial, entry)
        crl_number += 1
        crl_pem = build_crl(self.cert, self._key, crl_number, entries.values(), now, CRL_VALIDITY)
        write_revocations(self.paths, crl_number, entries.values())
        write_file_atomic(self.paths.crl, crl_pem, mode=0o644)
        return crl_pem, added

    def write_crl(self, now: datetime | None = None) -> bytes:
        """Write a fresh CRL (``pki/crl.pem``) and return it (PEM)."""
        with locked(self.paths):
            return self._write_crl_locked(now or utcnow())[0]

    def crl_next_update(self) -> datetime | None:
        """When the current CRL expires, or ``None`` when there is none."""
        try:
            crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
        except (OSError, ValueError):
            return None
        return crl.next_update_utc

    def refresh_crl_if_due(self, now: datetime | None = None) -> bool:
        """Rewrite the CRL when it is older than 30 days (call daily); tell whether it did.

        The broker refuses every client once its CRL expires, so the server
        should call this (and :func:`provisioning.broker.publish_crl`) periodically.
        """
        now = now or utcnow()
        next_update = self.crl_next_update()
        if next_update is not None and next_update - now > CRL_VALIDITY - CRL_REFRESH_AFTER:
            return False
        self.write_crl(now)
        return True

    def devices_expiring(self, within: timedelta, now: datetime | None = None) -> int:
        """Unrevoked devices with no certificate valid beyond ``now + within`` (expired too)."""
        now = now or utcnow()
        revoked = self.revoked_serials()
        latest: dict[str, datetime] = {}
        revoked_devices: set[str] = set()
        for item in self.issued_certificates():
            if item.serial in revoked:
                revoked_devices.add(item.common_name)
                continue
            latest[item.common_name] = max(
                item.not_after, latest.get(item.common_name, item.not_after)
            )
        return sum(
            1
            for device_id, not_after in latest.items()
            if device_id not in revoked_devices and not_after < now + within
        )

    def revoke_serials(
        self,
        serials: Iterable[int | str],
        *,
        reason: str = "unspecified",
        now: datetime | None = None,
    ) -> list[int]:
        """Put certificates on the CRL by serial and rewrite it.

        Serials not issued by this CA to a device are accepted too (e.g. the
        broker's or server's own), as long as they are numbers.

        Returns:
            The serials newly revoked (already revoked ones are left as they are).
        """
        now = now or utcnow()
        wanted = [parse_serial(serial) for serial in serials]
        owners = {issued.serial: issued.common_name for issued in self.issued_certificates()}
        entries = [
            RevokedEntry(serial=serial, revoked_at=now, device_id=owners.get(serial), reason=reason)
            for serial in wanted
        ]
        with locked(self.paths):
            _, added = self._write_crl_locked(now, entries)
        for serial in added:
            logger.info("revoked certificate %x (%s)", serial, owners.get(serial, "not a device"))
        return added

    def revoke_device(
        self, device_id: str, *, reason: str = "unspecified", now: datetime | None = None
    ) -> list[int]:
        """Revoke every certificate ever issued to a device.

        Returns:
            The serials newly revoked.

        Raises:
            UnknownCertificate: when this CA never issued a certificate to it.
        """
        check_device_id(device_id)
        issued = self.issued_certificates(device_id)
        if not issued:
            msg = f"no certificate was issued to device {device_id}"
            raise UnknownCertificate(msg)
        return self.revoke_serials([item.serial for item in issued], reason=reason, now=now)
