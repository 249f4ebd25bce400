"""Site gateways end to end: two enrolled gateways on a real TLS Mosquitto, printers on snmpsim.

Real parts throughout: `fieldlink ca init`, `broker-config`, Mosquitto with that
configuration (mutual TLS, per-certificate ACL), `fieldlink server run`, `fieldlink
agent enroll`, `fieldlink agent run` with ``[[agent.devices]]``, and
``snmpsim-command-responder`` serving RFC 3805 recordings.

Gateway A watches two printers and reports them like devices of their own
(health, faults, inventory, online state). Gateway B, enrolled too, plays the
attacker with its own certificate: what it publishes under A's prefix is refused by
the broker's ACL, and what it publishes under its own prefix for A's printer is
refused by the server (``not_bound``, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx2 as httpx
import pytest

from agent.health.link_setup import tls_context
from shared import topics
from shared.broker_url import BrokerAddress
from shared.ids import isoformat_z, utcnow
from tests.fixtures.center import TlsBroker, enroll_agent, secure_center
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until
from tests.fixtures.snmpsim import RECORDINGS, SnmpSimulator, responder_venv

pytestmark = pytest.mark.integration


@pytest.fixture
def center(tmp_path: Path, database_url: str) -> Iterator[tuple[ServerProcess, TlsBroker]]:
    with secure_center(tmp_path, database_url) as running:
        yield running


@pytest.fixture
def printers() -> Iterator[SnmpSimulator]:
    venv = responder_venv()
    recordings = [RECORDINGS / "colour.snmprec", RECORDINGS / "mono.snmprec"]
    with SnmpSimulator(venv, recordings) as simulator:
        yield simulator


def _register(server: ServerProcess, device_id: str, serial: str, **extra: str) -> Any:
    body = {"id": device_id, "serial": serial, "model": "m", "customer": "Acme", **extra}
    return server.api("POST", "/devices", json=body)


def _enroll(server: ServerProcess, gateway_id: str, directory: Path) -> Path:
    registered = _register(server, gateway_id, gateway_id.upper(), type="server")
    enrolled = enroll_agent(server, registered["enrollment_token"], directory)
    assert enrolled.returncode == 0, enrolled.stderr
    return directory / "agent.toml"


def _rejected(server: ServerProcess, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    needle = f'fieldlink_ingest_rejected_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.removeprefix(needle))
    return 0.0


def _waiting(outbox: Path) -> int:
    """Samples in the gateway's outbox not acknowledged by the broker yet."""
    with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0])


def _codes(detail: dict[str, Any]) -> set[str]:
    return {fault["code"] for fault in detail["open_faults"]}


async def _publish_as(agent: dict[str, Any], messages: list[tuple[str, bytes]]) -> None:
    """Publish with the certificate of the agent whose ``[agent]`` settings these are."""
    broker = BrokerAddress.parse(agent["broker_url"])
    tls = tls_context(
        broker, Path(agent["ca_file"]), Path(agent["cert_file"]), Path(agent["key_file"])
    )
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=agent["device_id"], tls_context=tls
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def _fault_event(device_id: str, code: str) -> bytes:
    event = {
        "v": 1,
        "device_id": device_id,
        "ts": isoformat_z(utcnow()),
        "type": "fault.raised",
        "body": {"code": code, "severity": "critical", "message": "forged"},
    }
    return json.dumps(event).encode()


def test_a_gateway_reports_its_printers_and_cannot_speak_for_another_gateways(
    tmp_path: Path, center: tuple[ServerProcess, TlsBroker], printers: SnmpSimulator
) -> None:
    server, broker = center
    config_a = _enroll(server, "server-gw-a", tmp_path / "gw-a")
    config_b = _enroll(server, "server-gw-b", tmp_path / "gw-b")
    _register(server, "mfp-colour", "COLOR-0042", type="mfp", via="server-gw-a")
    # Registered with another serial than the printer at that address reports.
    _register(server, "mfp-mono", "MONO-0002", type="mfp", via="server-gw-a")
    _register(server, "mfp-b", "B-1", type="mfp", via="server-gw-b")
    where = f'host = "{printers.host}"\nport = {printers.port}\nsnmp_timeout_s = 0.5\n'
    devices = (
        f'\n[[agent.devices]]\nid = "mfp-colour"\n{where}'
        'snmp_version = "2c"\nsnmp_community = "colour"\n'
        f'\n[[agent.devices]]\nid = "mfp-mono"\n{where}'
        'snmp_community = "mono"\nexpected_serial = "MONO-0002"\n'
    )
    config_a.write_text(config_a.read_text() + devices)
    gateway = AgentProcess(tmp_path, "server-gw-a", "unused")
    gateway.config = config_a
    gateway._spawn(
        [sys.executable, "-m", "shared", "agent", "run", "--config", str(config_a)],
        FIELDLINK_INTERVAL_S="2", FIELDLINK_STATE_DIR=str(tmp_path / "gw-a-state"),
        FIELDLINK_PROFILE="none", FIELDLINK_KEEPALIVE_S="2", FIELDLINK_RECONNECT_MIN_S="0.2",
    )  # fmt: skip
    try:
        # Gateway A's printers, like devices of their own.
        wait_until(lambda: "JAM" in _codes(server.device("mfp-colour")), timeout=60)
        colour = server.device("mfp-colour")
        assert colour["via"] == "server-gw-a"
        assert colour["online"] is True
        assert colour["status"] == "fault"
        assert colour["health"]["mfp.toner_black_percent"] == 50.0
        assert colour["health"]["mfp.toner_cyan_percent"] == 0.0
        assert {"JAM", "TONER-OUT-CYAN", "TONER-LOW-YELLOW"} <= _codes(colour)
        wait_until(lambda: server.device("mfp-colour")["inventory"] is not None, timeout=30)
        inventory = server.device("mfp-colour")["inventory"]
        assert inventory["serial"] == "COLOR-0042"
        assert inventory["model"] == "ACME ColorWriter C500"
        assert inventory["firmware"] == "C500 7.10.2"
        wait_until(lambda: "SERIAL-MISMATCH" in _codes(server.device("mfp-mono")), timeout=30)
        assert server.device("mfp-mono")["inventory"]["serial"] == "MONO-0001"
        gateway_a = server.device("server-gw-a")
        assert gateway_a["online"] is True
        assert gateway_a["open_faults"] == []  # the printers' faults are theirs

        # Gateway B, with its own certificate: under A's prefix the broker's ACL drops
        # it (the server would accept it: mfp-colour IS bound to A); under its own
        # prefix the server refuses it, not being bound. Same connection, in order:
        # once the second is counted, the first would have been applied.
        not_bound = _rejected(server, "not_bound")
        rejected = server.device("mfp-colour")["telemetry_stats"]["rejected"]
        asyncio.run(
            _publish_as(
                tomllib.loads(config_b.read_text())["agent"],
                [
                    (
                        topics.via_topic("server-gw-a", "mfp-colour", "events"),
                        _fault_event("mfp-colour", "FORGED-A"),
                    ),
                    (
                        topics.via_topic("server-gw-b", "mfp-colour", "events"),
                        _fault_event("mfp-colour", "FORGED-B"),
                    ),
                ],
            )
        )
        wait_until(lambda: _rejected(server, "not_bound") >= not_bound + 1, timeout=30)
        colour = server.device("mfp-colour")
        assert colour["telemetry_stats"]["rejected"] == rejected + 1
        assert not {"FORGED-A", "FORGED-B"} & {a["code"] for a in colour["alerts"]}
        assert server.device("mfp-b")["telemetry_stats"]["received"] == 0

        # The printers stop answering: unreachable, while the gateway stays online.
        printers.stop()
        wait_until(lambda: server.device("mfp-colour")["online"] is False, timeout=30)
        colour = server.device("mfp-colour")
        assert colour["online_reason"] == "unreachable"
        assert server.device("server-gw-a")["online"] is True
        printers.start()
        wait_until(lambda: server.device("mfp-colour")["online"] is True, timeout=30)

        # The broker goes away: the printers' samples wait on the gateway's disk, and all
        # of them arrive once it is back (none counted missing).
        outbox = tmp_path / "gw-a-state" / "via" / "outbox.sqlite3"
        received = server.device("mfp-colour")["telemetry_stats"]["received"]
        broker.stop()
        wait_until(lambda: _waiting(outbox) >= 4, timeout=60)
        broker.start()
        wait_until(lambda: _waiting(outbox) == 0, timeout=60)
        wait_until(
            lambda: server.device("mfp-colour")["telemetry_stats"]["received"] >= received + 2,
            timeout=60,
        )
        assert server.device("mfp-colour")["telemetry_stats"]["missing"] == 0
        assert server.device("mfp-mono")["telemetry_stats"]["missing"] == 0

        # The gateway dies: its last will takes its printers offline with it.
        gateway.kill()
        wait_until(lambda: server.device("server-gw-a")["online"] is False, timeout=30)
        wait_until(lambda: server.device("mfp-colour")["online"] is False, timeout=30)
        assert server.device("mfp-colour")["online_reason"] == "gateway_offline"
        assert server.device("mfp-mono")["online_reason"] == "gateway_offline"
    finally:
        gateway.stop()
