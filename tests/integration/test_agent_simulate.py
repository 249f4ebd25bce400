"""The fleet simulator: N simulated agents in one process, each its own MQTT device."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest

from agent.simulate import fleet_ids, run_fleet
from shared import topics
from shared.models import DeviceState, HealthSample, parse_message
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import FIELDLINK_SCRIPT as FIELDLINK
from tests.fixtures.recorder import Recorder

pytestmark = pytest.mark.integration


def online(recorder: Recorder, device_id: str) -> list[DeviceState]:
    return [
        state
        for state in (
            parse_message(DeviceState, s.payload) for s in recorder.on(topics.state(device_id))
        )
        if state.online
    ]


async def test_run_fleet_brings_every_device_online_with_mixed_profiles(
    mosquitto: MosquittoBroker,
) -> None:
    ids = fleet_ids("simt", 6)
    assert ids[0] == "simt-0000"
    assert ids[-1] == "simt-0005"
    async with Recorder(mosquitto, "fieldlink/v1/+/state", "fieldlink/v1/+/telemetry") as rec:
        fleet = asyncio.create_task(
            run_fleet(mosquitto.url, ids, interval_s=0.5, seed=3, keepalive_s=5)
        )
        try:
            await rec.wait_for(
                lambda: all(
                    len(rec.on(topics.telemetry(device))) >= 3 and online(rec, device)
                    for device in ids
                ),
                15,
                "3 samples from every device",
            )
        finally:
            fleet.cancel()
            await asyncio.gather(fleet, return_exceptions=True)
        prefixes = set()
        for device in ids:
            got = [parse_message(HealthSample, s.payload) for s in rec.on(topics.telemetry(device))]
            assert [s.seq for s in got[:3]] == [0, 1, 2]
            assert {s.boot_id for s in got} == {online(rec, device)[0].boot_id}
            assert "cpu_percent" in got[0].metrics
            prefixes |= {name.split(".")[0] for name in got[0].metrics if "." in name}
        assert {"mfp", "imaging", "server"} <= prefixes
        # Cancelling the fleet stops every device cleanly.
        await rec.wait_for(
            lambda: all(
                json.loads(rec.on(topics.state(device))[-1].payload).get("reason") == "shutdown"
                for device in ids
            ),
            5,
            "a shutdown state from every device",
        )


async def test_simulate_command_runs_until_sigint(mosquitto: MosquittoBroker) -> None:
    ids = [f"clisim-{n:04d}" for n in range(3)]
    async with Recorder(mosquitto, "fieldlink/v1/+/state") as rec:
        process = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
            [
                FIELDLINK,
                "simulate",
                "--devices",
                "3",
                "--prefix",
                "clisim",
                "--broker",
                mosquitto.url,
                "--interval",
                "0.5",
                "--profile",
                "imaging",
            ],
            stderr=subprocess.PIPE,
        )
        try:
            await rec.wait_for(lambda: all(online(rec, d) for d in ids), 15, "3 devices online")
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr
        assert b"Traceback" not in stderr
        for device in ids:
            last = parse_message(DeviceState, rec.on(topics.state(device))[-1].payload)
            assert last.reason == "shutdown"


async def test_simulate_command_refuses_a_bad_prefix(mosquitto: MosquittoBroker) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            FIELDLINK,
            "simulate",
            "--devices",
            "1",
            "--prefix",
            "Bad Prefix",
            "--broker",
            mosquitto.url,
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.decode().strip().count("\n") == 0
    assert "invalid device id" in result.stderr.decode()
