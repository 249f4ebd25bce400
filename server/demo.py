"""``fieldlink demo``: everything on embedded defaults, for a first look.

A server on SQLite with an embedded Mosquitto, users of each role, a handful
of registered devices, and a separate ``fieldlink simulate`` process that
plays those devices (an MFP, an imaging console and a server, in rotation);
and a site gateway, a real agent watching two printers over SNMP
(:mod:`server.demo_gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import typer
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.config import ServerSettings
from server.demo_gateway import GATEWAY_ID, prepare_gateway, start_gateway
from server.kpi.config import KpiSettings
from server.main import create_app
from server.models import Device, DeviceCreate, User
from server.security import hash_password
from shared.errors import UnavailableError
from shared.hostkeys import ensure_host_keys, read_public_key

logger = logging.getLogger(__name__)

DEMO_TYPES = ("mfp", "imaging", "server")
# Believable customers: (customer, site, region, phone, model per type)
CUSTOMERS = [
    ("Acme Offices", "Berlin HQ, 3rd floor", "emea", "+49 30 1234 5678"),
    ("St. Mary Hospital", "Radiology, building B", "emea", "+44 20 7946 0018"),
    ("Northwind Logistics", "Data room 2", "americas", "+1 312 555 0142"),
    ("Sakura Clinic", "Imaging suite", "apac", "+81 3 5555 0199"),
    ("Contoso Legal", "Reception", "americas", "+1 206 555 0117"),
]
MODELS = {"mfp": "Imagio MP 6055", "imaging": "Somatom Go.Up console", "server": "PowerEdge R650"}


@dataclass
class DemoLogin:
    """A demo user and the password printed for it."""

    username: str
    role: str
    password: str


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_device_ids(count: int) -> list[str]:
    """The ids ``fieldlink simulate --prefix demo`` uses: demo-0000, demo-0001, ..."""
    return [f"demo-{index:04d}" for index in range(count)]


def prepare(engine: Engine, devices: int, host_keys: Path | None = None) -> list[DemoLogin]:
    """Create (or reset) the demo users and register the demo devices.

    With ``host_keys`` (the simulated devices' SSH host keys), each device's
    public key is pinned as enrollment would, so that sessions to it work.
    """
    logins = [
        DemoLogin(name, name, secrets.token_urlsafe(9)) for name in ("operator", "manager", "admin")
    ]
    with Session(engine) as session:
        for login in logins:
            user = crud.get_user(session, username=login.username)
            if user is None:
                crud.create_user(
                    session, username=login.username, role=login.role, password=login.password
                )
            else:
                user.password_hash = hash_password(login.password)
                session.add(user)
                session.commit()
        for index, device_id in enumerate(demo_device_ids(devices)):
            if session.get(Device, device_id) is not None:
                continue
            device_type = DEMO_TYPES[index % len(DEMO_TYPES)]
            customer, site, region, phone = CUSTOMERS[index % len(CUSTOMERS)]
            crud.register_device(
                session,
                data=DeviceCreate(
                    id=device_id,
                    serial=f"SN{7300 + index:05d}",
                    model=MODELS[device_type],
                    type=device_type,
                    customer=customer,
                    site=site,
                    region=region,
                    contact_phone=phone[:-2] + f"{index % 100:02d}",
                ),
            )
        if host_keys is not None:
            for device_id in demo_device_ids(devices):
                device = session.get(Device, device_id)
                if device is not None:
                    device.ssh_host_key = read_public_key(host_keys, device_id)
                    session.add(device)
            session.commit()
        _seed_incidents(session, devices)
    return logins


_PANEL_PAGE: Final = (
    b"<!doctype html><html><head><title>Device web panel</title></head><body>"
    b"<h1>Device web panel</h1><p>Status: ready. Trays: 1 ok, 2 ok. "
    b"This page stands in for a device's own web interface.</p></body></html>"
)


async def _serve_panel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one HTTP request with the stand-in device web panel."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            + f"Content-Length: {len(_PANEL_PAGE)}\r\nConnection: close\r\n\r\n".encode()
            + _PANEL_PAGE
        )
        await writer.drain()
    writer.close()


def _prepare_keys(directory: Path, devices: int) -> Path:
    """The CA and command key (for signed session requests), and the devices' host keys."""
    from provisioning.ca import CertificateAuthority
    from provisioning.pki import PkiPaths

    if not PkiPaths.under(directory).ca_cert.exists():
        CertificateAuthority.init(directory)
    host_keys = directory / "host-keys"
    ensure_host_keys(host_keys, demo_device_ids(devices))
    return host_keys


def _seed_incidents(session: Session, devices: int) -> None:
    """A year of demo incidents, when the KPI module is installed."""
    try:
        from server.incidents.demo import seed_demo_incidents
    except ImportError:
        return
    rows = [session.get(Device, device_id) for device_id in demo_device_ids(devices)]
    seed_demo_incidents(session, [row for row in rows if row is not None])
    from server.surveys.demo import seed_demo_surveys

    seed_demo_surveys(session)  # the customer's voice on those cases, labelled demo


async def run_demo(directory: Path, devices: int, port: int, interval: float) -> None:
    """Run the demo until SIGINT or SIGTERM."""
    settings = ServerSettings(
        database_url=f"sqlite:///{directory / 'fieldlink.db'}",
        broker_url="embedded",
        state_dir=directory,
        http_host="127.0.0.1",
        http_port=port,
        log_level="warning",
        access_log_file=directory / "access.log",  # not onto the demo's terminal
        # The usual gateway port when it is free (a second demo takes any port).
        ssh_gateway_port=2222 if port_free(2222) else 0,
        # The simulated devices' faults open incidents, as a proactive center runs.
        kpi=KpiSettings(alerts_open_incidents=True),
    )
    # For the administrative commands: `fieldlink kpi --config fieldlink-demo/server.toml`.
    await asyncio.to_thread(
        (directory / "server.toml").write_text,
        "# Written by `fieldlink demo`: the demo's database, for the administrative commands.\n"
        f'[server]\ndatabase_url = "{settings.database_url}"\nstate_dir = "{directory}"\n',
    )
    host_keys = await asyncio.to_thread(_prepare_keys, directory, devices)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # no proxy in front of the demo: the peer is the client
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            msg = "the demo server stopped while starting"
            raise UnavailableError(msg)
        await asyncio.sleep(0.05)
    engine: Engine = app.state.engine
    logins = await asyncio.to_thread(prepare, engine, devices, host_keys)
    await asyncio.to_thread(prepare_gateway, engine)
    # The simulated devices' "web" service: a stand-in for a device's own web panel.
    panel = await asyncio.start_server(_serve_panel, "127.0.0.1", 0)
    panel_port = panel.sockets[0].getsockname()[1]
    broker_url: str = app.state.broker_url
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared", "simulate",
        "--devices", str(devices), "--prefix", "demo", "--broker", broker_url,
        "--interval", str(interval), "--profile", "mixed",
        "--command-key", str(directory / "pki" / "command-signing.pub.pem"),
        "--host-key-dir", str(host_keys), "--state-dir", str(directory / "devices"),
        "--service", f"web=127.0.0.1:{panel_port}",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    gateway = await start_gateway(directory / "gateway", broker_url, interval)
    url = f"http://127.0.0.1:{port}"
    typer.echo("")
    typer.echo(f"fieldlink demo is running: {devices} simulated devices, broker {broker_url}")
    typer.echo(f"  console:  {url}/")
    typer.echo(
        f"  gateway:  {GATEWAY_ID} watches {', '.join(gateway.printer_ids)} over SNMP "
        f"(udp 127.0.0.1:{gateway.snmp_port}): {url}/devices/{GATEWAY_ID}"
    )
    typer.echo(f"  API docs: {url}/docs")
    for login in logins:
        typer.echo(f"  login:    {login.username} / {login.password}  ({login.role})")
    typer.echo(f"  CLI:      fieldlink login --server {url} --user operator && fieldlink devices")
    typer.echo(f"  session:  fieldlink exec {demo_device_ids(1)[0]} -- uptime  (after login)")
    ssh_port = getattr(app.state, "ssh_gateway_port", None)
    if ssh_port:
        typer.echo(
            f"  ssh:      ssh -p {ssh_port} {demo_device_ids(1)[0]}@127.0.0.1"
            "  (after fieldlink user add-key operator KEY.pub)"
        )
    typer.echo(f"  KPIs:     fieldlink kpi --config {directory / 'server.toml'} --by month")
    typer.echo(f"  data:     {directory}  (Ctrl-C stops everything)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait()), serving]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    await gateway.stop()
    if simulator.returncode is None:
        simulator.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(simulator.wait(), timeout=10)
    panel.close()
    server.should_exit = True
    await serving


__all__ = ["User", "demo_device_ids", "free_port", "port_free", "prepare", "run_demo"]
