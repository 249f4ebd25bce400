"""The demo's site gateway: one real agent watching two SNMP printers on loopback.

``fieldlink demo`` registers a gateway (``demo-gateway``) and two printers bound
to it (``--via``), serves the printers from :mod:`server.demo_snmp` (a colour MFP
with a jam and an empty toner, a mono one), and runs ``fieldlink agent run`` with
their ``[[agent.devices]]`` tables: the gateway polls them over SNMP and publishes
for them on its via topics, as at a customer's site.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.demo_snmp import demo_recordings, serve
from server.models import Device, DeviceCreate

GATEWAY_ID: Final = "demo-gateway"
#: ``(device id, serial, model, community)`` of each watched printer.
PRINTERS: Final = (
    ("demo-printer-1", "COLOR-0042", "ACME ColorWriter C500", "colour"),
    ("demo-printer-2", "MONO-0001", "ACME LaserWriter M400", "mono"),
)
CUSTOMER: Final = ("Acme Offices", "Berlin HQ, 3rd floor", "emea", "+49 30 1234 5600")


def prepare_gateway(engine: Engine) -> None:
    """Register the gateway and its printers (once)."""
    customer, site, region, phone = CUSTOMER
    common = {"customer": customer, "site": site, "region": region, "contact_phone": phone}
    with Session(engine) as session:
        if session.get(Device, GATEWAY_ID) is None:
            crud.create_device(
                session,
                data=DeviceCreate(
                    id=GATEWAY_ID, serial="GW-0001", model="Site PC", type="server", **common
                ),
            )
        for device_id, serial, model, _community in PRINTERS:
            if session.get(Device, device_id) is None:
                crud.create_device(
                    session,
                    data=DeviceCreate(
                        id=device_id, serial=serial, model=model, type="mfp",
                        via=GATEWAY_ID, **common,
                    ),
                )  # fmt: skip


def gateway_config(directory: Path, broker_url: str, snmp_port: int, interval: float) -> str:
    """The gateway agent's configuration."""
    lines = [
        "# Written by `fieldlink demo`: the site gateway and the printers it watches.",
        "[agent]",
        f'device_id = "{GATEWAY_ID}"',
        f'broker_url = "{broker_url}"',
        f'state_dir = "{directory / "state"}"',
        'profile = "none"',
        f"interval_s = {interval}",
        "reconnect_min_s = 0.5",
    ]
    for device_id, _serial, _model, community in PRINTERS:
        lines += [
            "",
            "[[agent.devices]]",
            f'id = "{device_id}"',
            'profile = "mfp"',
            'host = "127.0.0.1"',
            f"port = {snmp_port}",
            'snmp_version = "2c"',
            f'snmp_community = "{community}"',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class DemoGateway:
    """The running printers' SNMP agent and the gateway's agent process."""

    transport: asyncio.DatagramTransport
    process: asyncio.subprocess.Process
    snmp_port: int

    @property
    def printer_ids(self) -> Sequence[str]:
        return [device_id for device_id, *_ in PRINTERS]

    async def stop(self) -> None:
        """Stop the gateway agent (its ``shutdown`` state), then the printers."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.transport.close()


async def start_gateway(directory: Path, broker_url: str, interval: float) -> DemoGateway:
    """Serve the printers over SNMP on loopback and start the gateway's agent."""
    transport, port = await serve(await asyncio.to_thread(demo_recordings))
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    config = directory / "agent.toml"
    await asyncio.to_thread(
        config.write_text, gateway_config(directory, broker_url, port, interval)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    log = await asyncio.to_thread((directory / "agent.log").open, "ab")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared", "agent", "run", "--config", str(config),
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log, stderr=log,
        )  # fmt: skip
    finally:
        log.close()  # the child has its own descriptor
    return DemoGateway(transport, process, port)
