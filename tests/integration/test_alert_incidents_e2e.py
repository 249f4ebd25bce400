"""A real agent's fault opens one incident on two real server processes (issue 14).

A real agent process (the real imaging profile) echoes a real DICOM peer over a
real Mosquitto; two ``fieldlink server run`` processes share the database and
the fleet's messages with ``[server.kpi] alerts_open_incidents = true``. The
peer going down opens exactly one incident; coming back proposes the restore
time, which the desk confirms in one click with a resolution note.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dicom import VerificationScp
from tests.fixtures.dicom import imaging_agent_config as _config
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.integration

CODE = "DICOM-ECHO-FAIL-PACS"


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as broker:
        yield broker


def _server(directory: Path, database_url: str, broker_url: str) -> ServerProcess:
    directory.mkdir()
    server = ServerProcess(directory, database_url, broker_url, offline_after_s=60)
    with server.config.open("a") as config:
        config.write("\n[server.kpi]\nalerts_open_incidents = true\n")
    return server


def _alert_incidents(server: ServerProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.api(
        "GET", "/incidents", params={"device_id": "ct-alert-1", "limit": 1000}
    )["items"]
    return [item for item in items if item["error_code"] == CODE]


def test_a_dicom_fault_opens_one_incident_on_two_servers_and_the_desk_closes_it(
    tmp_path: Path, mosquitto: MosquittoBroker, database_url: str
) -> None:
    device = "ct-alert-1"
    scp = VerificationScp()
    scp.start()
    first = _server(tmp_path / "one", database_url, mosquitto.url)
    second = _server(tmp_path / "two", database_url, mosquitto.url)
    with first, second:
        first.register(device, "imaging")
        agent = AgentProcess(tmp_path, device, mosquitto.url)
        agent.config = _config(tmp_path, mosquitto, device, scp.port)
        try:
            agent.start()
            wait_until(
                lambda: (
                    (first.device(device)["health"] or {}).get("imaging.dicom_peer_up:pacs") == 1.0
                ),
                timeout=30,
            )
            assert _alert_incidents(first) == []
            scp.stop()
            wait_until(lambda: _alert_incidents(first), timeout=30)
            # The fault is repeated in every sample, read by both servers: still one.
            alerts = first.api("GET", "/alerts", params={"code": CODE})["items"]
            assert len(alerts) == 1
            [incident] = _alert_incidents(second)
            assert alerts[0]["incident_id"] == incident["id"]
            assert incident["channel"] == "alert"
            assert incident["state"] == "open"
            assert incident["down_at"] == alerts[0]["raised_at"]
            assert incident["restored_at_proposed"] is None
            opened = first.api("GET", "/incidents", params={"state": "open"})["count"]
            scp.start()
            wait_until(lambda: _alert_incidents(first)[0]["restored_at_proposed"] is not None, 30)
            [incident] = _alert_incidents(first)
            history = first.device(device)["alerts"]
            [cleared] = [a for a in history if a["code"] == CODE]
            assert incident["restored_at_proposed"] == cleared["cleared_at"]
            assert first.api("GET", "/alerts", params={"code": CODE})["items"] == []
            closed = second.api(
                "POST",
                f"/incidents/{incident['id']}/close",
                json={"resolution": "remote", "resolution_note": "PACS service restarted"},
            )
            assert closed["state"] == "closed"
            assert closed["restored_at"] == cleared["cleared_at"]
            assert first.api("GET", "/incidents", params={"state": "open"})["count"] == opened - 1
            similar = first.api(
                "GET", "/incidents/similar", params={"error_code": CODE, "model": "test"}
            )
            assert similar["count"] == 1
            assert similar["remote_share"] == 1.0
            assert similar["fixes"][0]["note"] == "PACS service restarted"
        finally:
            agent.stop()
            scp.stop()
