"""A real agent process with the real imaging profile: DICOM peer down and back, over MQTT."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.fixtures.dicom import VerificationScp
from tests.fixtures.dicom import imaging_agent_config as _config
from tests.fixtures.managed import ManagedProcess
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import (
    AgentProcess,
    ServerProcess,
    agent_run_refused,
    start_agent_run,
    wait_until,
)
from tests.fixtures.recorder import Recorder, samples

pytestmark = pytest.mark.integration


async def test_a_pacs_going_down_and_back_raises_and_clears_the_fault(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    device = "ct-imaging-1"
    scp = VerificationScp(require_calling=["CT_ROOM_2"])
    scp.start()
    config = _config(tmp_path, mosquitto, device, scp.port)
    process: ManagedProcess | None = None
    try:
        async with Recorder(mosquitto, f"fieldlink/v1/{device}/#") as recorder:
            process = start_agent_run(config, tmp_path / "agent.log")

            def peer_up(value: float) -> bool:
                got = samples(recorder, device)
                return bool(got) and got[-1].metrics.get("imaging.dicom_peer_up:pacs") == value

            await recorder.wait_for(lambda: peer_up(1.0), 20, "the PACS up")
            first = samples(recorder, device)[-1]
            assert first.status == "ok"
            assert "imaging.dicom_echo_ms:pacs" in first.metrics
            assert first.metrics["imaging.service_up:dicom_store"] == 1.0
            assert 0 <= first.metrics["imaging.cache_disk_percent"] <= 100
            assert not any(name.startswith("mfp.") for name in first.metrics)

            scp.stop()
            await recorder.wait_for(lambda: peer_up(0.0), 20, "the PACS down")
            down = samples(recorder, device)[-1]
            assert down.status == "fault"
            codes = {f.code: f.message for f in down.faults}
            assert "refused" in codes["DICOM-ECHO-FAIL-PACS"]
            assert "SVC-DOWN-DICOM_STORE" in codes

            scp.start()
            await recorder.wait_for(lambda: peer_up(1.0), 20, "the PACS back")
            back = samples(recorder, device)[-1]
            assert back.faults == []
            assert back.status == "ok"
    finally:
        scp.stop()
        if process is not None:
            await asyncio.to_thread(process.stop)


async def test_a_bad_dicom_table_stops_the_agent_with_one_line(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = _config(tmp_path, mosquitto, "ct-imaging-2", 104)
    config.write_text(config.read_text().replace('ae_title = "PACS"', 'ae_title = "PA\\\\CS"'))
    result = await asyncio.to_thread(agent_run_refused, config)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "[[agent.dicom_peers]] #1 ae_title" in lines[0]


def _peer_up(server: ServerProcess, device_id: str) -> float | None:
    health = server.device(device_id)["health"] or {}
    value = health.get("imaging.dicom_peer_up:pacs")
    return None if value is None else float(value)


def _open_faults(server: ServerProcess, device_id: str) -> dict[str, str]:
    device = server.device(device_id)
    return {f["code"]: f["message"] for f in device["open_faults"]}


def test_the_center_shows_the_dicom_fault_open_then_cleared(
    tmp_path: Path, mosquitto: MosquittoBroker, database_url: str
) -> None:
    device = "ct-center-1"
    scp = VerificationScp()
    scp.start()
    with ServerProcess(tmp_path, database_url, mosquitto.url, offline_after_s=60) as server:
        server.register(device, "imaging")
        agent = AgentProcess(tmp_path, device, mosquitto.url)
        # the real profile's tables (AgentProcess writes flat keys only)
        agent.config = _config(tmp_path, mosquitto, device, scp.port)
        try:
            agent.start()
            wait_until(lambda: _peer_up(server, device) == 1.0, timeout=20)
            assert _open_faults(server, device) == {}
            scp.stop()
            wait_until(lambda: "DICOM-ECHO-FAIL-PACS" in _open_faults(server, device), timeout=20)
            assert "[refused]" in _open_faults(server, device)["DICOM-ECHO-FAIL-PACS"]
            assert server.device(device)["health"]["imaging.dicom_peer_up:pacs"] == 0.0
            scp.start()
            wait_until(lambda: "DICOM-ECHO-FAIL-PACS" not in _open_faults(server, device), 20)
            alerts = server.api("GET", f"/devices/{device}")
            assert alerts["health"]["imaging.dicom_peer_up:pacs"] == 1.0
        finally:
            agent.stop()
            scp.stop()


@pytest.mark.skipif(shutil.which("smartctl") is None, reason="smartmontools is not installed")
async def test_a_server_agent_runs_the_real_smartctl(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    device = "srv-real-1"
    config = tmp_path / "server.toml"
    config.write_text(
        f'[agent]\ndevice_id = "{device}"\nbroker_url = "{mosquitto.url}"\ninterval_s = 1\n'
        f'state_dir = "{tmp_path / "state"}"\nprofile = "server"\n'
        'systemd_units = ["ssh.service"]\nsmart_disks = ["/dev/fieldlink-absent"]\n'
    )
    async with Recorder(mosquitto, f"fieldlink/v1/{device}/#") as recorder:
        process = start_agent_run(config, tmp_path / "server-agent.log")
        try:
            got = await recorder.wait_for(
                lambda: samples(recorder, device), 20, "a sample of the server agent"
            )
        finally:
            await asyncio.to_thread(process.stop)
    codes = {f.code: f.message for f in got[0].faults}
    assert "SMART-UNAVAILABLE-FIELDLINK-ABSENT" in codes
    assert got[0].status == "warning"
