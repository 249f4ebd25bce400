"""Device enrollment: a one-time token and a CSR made on the device buy a certificate."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from server import audit, crud
from server.api.deps import SessionDep, SettingsDep, client_address
from server.config import ServerSettings

if TYPE_CHECKING:
    from provisioning.ca import CertificateAuthority

logger = logging.getLogger(__name__)
router = APIRouter(tags=["enrollment"])


class EnrollRequest(BaseModel):
    """What ``fieldlink agent enroll`` sends: the token and a CSR (the key stays on the device)."""

    token: Annotated[str, Field(min_length=1, max_length=256)]
    csr_pem: Annotated[str, Field(min_length=1, max_length=16_384)]
    ssh_host_key: Annotated[str | None, Field(max_length=1024)] = None


class EnrollResponse(BaseModel):
    """The device's certificate and everything it needs to connect and to trust commands."""

    device_id: str
    cert_pem: str
    ca_pem: str
    broker_url: str
    server_url: str
    command_public_key_pem: str


def device_broker_url(settings: ServerSettings, request: Request) -> str:
    """The broker URL devices should use."""
    if settings.device_broker_url:
        return settings.device_broker_url
    broker_url: str = getattr(request.app.state, "broker_url", settings.broker_url)
    return broker_url


async def _device_ca(settings: ServerSettings) -> CertificateAuthority:
    """The device CA, or 503 when this server has none yet."""
    from provisioning.ca import CertificateAuthority
    from provisioning.pki import CaNotInitialized

    try:
        return await asyncio.to_thread(CertificateAuthority.load, settings.state_dir)
    except CaNotInitialized as exc:
        raise HTTPException(
            status_code=503, detail="enrollment is not set up on this server"
        ) from exc


@router.post("/enroll")
async def enroll(
    body: EnrollRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> EnrollResponse:
    """Enroll a device with its one-time token; answers its certificate (401/409 for bad tokens)."""
    ca = await _device_ca(settings)
    result = await asyncio.to_thread(
        crud.enroll,
        session,
        ca=ca,
        token=body.token,
        csr_pem=body.csr_pem,
        ssh_host_key=body.ssh_host_key,
        source_ip=client_address(request),
    )
    server_url = settings.public_url or str(request.base_url).rstrip("/")
    return EnrollResponse(
        **result.response(broker_url=device_broker_url(settings, request), server_url=server_url)
    )


class RenewRequest(BaseModel):
    """A device renewing its certificate: the current one, a CSR, and proof it holds the key."""

    cert_pem: Annotated[str, Field(min_length=1, max_length=16_384)]
    csr_pem: Annotated[str, Field(min_length=1, max_length=16_384)]
    proof: Annotated[str, Field(min_length=1, max_length=2_048)]


class RenewResponse(BaseModel):
    """The renewed certificate."""

    device_id: str
    cert_pem: str
    not_after: str


@router.post("/renew")
async def renew(
    body: RenewRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> RenewResponse:
    """Renew a device certificate, authenticated by the current key (403 when refused)."""
    from provisioning.pki import RenewalRefused

    ca = await _device_ca(settings)
    try:
        device_id, issued = await asyncio.to_thread(
            crud.renew,
            session,
            ca=ca,
            cert_pem=body.cert_pem,
            csr_pem=body.csr_pem,
            proof=body.proof,
            source_ip=client_address(request),
        )
    except RenewalRefused as exc:
        session.rollback()
        logger.warning("certificate renewal refused: %s", exc)
        audit.record(
            session,
            actor="anonymous",
            action="device.renew_refused",
            details={"reason": str(exc)},
            source_ip=client_address(request),
        )
        session.commit()
        raise HTTPException(status_code=403, detail=str(exc)) from exc
    return RenewResponse(
        device_id=device_id, cert_pem=issued.cert_pem, not_after=issued.not_after.isoformat()
    )
