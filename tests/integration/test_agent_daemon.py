"""The real agent daemon (`fieldlink agent run`) against a real Mosquitto.

A raw aiomqtt subscriber observes what a server would: the retained birth,
samples every interval, the clean shutdown state, the broker's last will, and
a backlog drained in order after the broker comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from shared import topics
from shared.ids import isoformat_z, utcnow
from shared.models import DeviceState, parse_message
from tests.fixtures.managed import ManagedProcess
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import agent_run_refused, start_agent_run
from tests.fixtures.recorder import Recorder, samples, states

pytestmark = pytest.mark.integration


@pytest.fixture
def agent_config(tmp_path: Path, mosquitto: MosquittoBroker) -> Callable[..., Path]:
    def write(device_id: str, **values: Any) -> Path:
        settings = {
            "device_id": device_id,
            "broker_url": mosquitto.url,
            "interval_s": 1,
            "state_dir": str(tmp_path / f"state-{device_id}"),
            "keepalive_s": 2,
            "reconnect_min_s": 0.5,
            "reconnect_max_s": 2,
            "profile": "mfp",
            "simulate": True,
            "seed": 1,
            **values,
        }
        body = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
        path = tmp_path / f"{device_id}.toml"
        path.write_text(f"[agent]\n{body}")
        return path

    return write


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    started: list[ManagedProcess] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        agent = start_agent_run(config, tmp_path / f"{config.stem}.log")
        started.append(agent)
        assert agent.process is not None
        return agent.process

    yield start
    for agent in started:
        agent.kill()


async def wait_exit(process: subprocess.Popen[bytes], within: float = 10) -> int:
    return await asyncio.to_thread(process.wait, within)


async def test_agent_publishes_retained_birth_samples_and_clean_shutdown(
    mosquitto: MosquittoBroker,
    agent_config: Callable[..., Path],
    start_agent: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    device = "mfp-daemon-1"
    async with Recorder(mosquitto, "fieldlink/v1/mfp-daemon-1/#") as recorder:
        process = start_agent(agent_config(device))
        await recorder.wait_for(lambda: len(samples(recorder, device)) >= 3, 15, "3 samples")
        birth = states(recorder, device)[0]
        assert birth.online is True
        assert birth.agent_version
        assert birth.capabilities == ["via-sessions"]  # the server checks it (gateways)
        got = samples(recorder, device)
        assert [s.seq for s in got[:3]] == [0, 1, 2]
        assert {s.boot_id for s in got} == {birth.boot_id}
        assert all(s.sent_at is not None and s.sent_at >= s.ts for s in got)
        assert any(name.startswith("mfp.") for name in got[0].metrics)
        assert "cpu_percent" in got[0].metrics
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(got)]
        assert all(0.5 < gap.total_seconds() < 1.5 for gap in gaps), gaps

    # A subscriber arriving later still finds the birth: it is retained.
    async with Recorder(mosquitto, topics.state(device)) as late:
        retained = await late.wait_for(lambda: late.on(topics.state(device)), 5, "birth")
        assert retained[0].retain
        assert parse_message(DeviceState, retained[0].payload).online is True

        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process) == 0
        offline = await late.wait_for(
            lambda: [s for s in states(late, device) if not s.online], 5, "shutdown state"
        )
        assert offline[0].reason == "shutdown"
        assert offline[0].boot_id == birth.boot_id

    async with Recorder(mosquitto, topics.state(device)) as after:
        kept = await after.wait_for(lambda: after.on(topics.state(device)), 5, "retained state")
        assert parse_message(DeviceState, kept[-1].payload).reason == "shutdown"


async def test_sigint_also_stops_cleanly(
    mosquitto: MosquittoBroker,
    agent_config: Callable[..., Path],
    start_agent: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    device = "mfp-daemon-int"
    async with Recorder(mosquitto, topics.state(device)) as recorder:
        process = start_agent(agent_config(device))
        await recorder.wait_for(lambda: states(recorder, device), 10, "birth")
        process.send_signal(signal.SIGINT)
        assert await wait_exit(process) == 0
        await recorder.wait_for(
            lambda: [s for s in states(recorder, device) if s.reason == "shutdown"], 5, "shutdown"
        )


async def test_kill_9_makes_the_broker_publish_the_will_within_1_5_keepalive(
    mosquitto: MosquittoBroker,
    agent_config: Callable[..., Path],
    start_agent: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    device = "mfp-daemon-kill"
    keepalive_s = 2
    async with Recorder(mosquitto, topics.state(device)) as recorder:
        process = start_agent(agent_config(device, keepalive_s=keepalive_s))
        await recorder.wait_for(lambda: states(recorder, device), 10, "birth")
        birth = states(recorder, device)[0]
        killed_at = time.monotonic()
        process.kill()
        await wait_exit(process)
        await recorder.wait_for(
            lambda: [s for s in states(recorder, device) if not s.online],
            1.5 * keepalive_s,
            "the last will",
        )
        will = next(
            s for s in recorder.on(topics.state(device)) if not json.loads(s.payload)["online"]
        )
        assert will.at - killed_at <= 1.5 * keepalive_s
        state = parse_message(DeviceState, will.payload)
        assert state.reason == "connection_lost"
        assert state.boot_id == birth.boot_id


@pytest.mark.slow
async def test_broker_outage_loses_no_sample_and_drains_in_order(
    mosquitto: MosquittoBroker,
    agent_config: Callable[..., Path],
    start_agent: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    device = "mfp-daemon-outage"
    async with Recorder(mosquitto, f"fieldlink/v1/{device}/#") as recorder:
        process = start_agent(agent_config(device, interval_s=1))
        await recorder.wait_for(lambda: len(samples(recorder, device)) >= 3, 15, "3 samples")

        await asyncio.to_thread(mosquitto.stop)
        await asyncio.sleep(30)
        await asyncio.to_thread(mosquitto.start)
        await asyncio.wait_for(recorder.connected.wait(), 5)

        # About 30 samples were taken while the broker was away; wait for them and a few more.
        await recorder.wait_for(
            lambda: len({s.seq for s in samples(recorder, device)}) >= 36, 20, "the backlog"
        )
        assert process.poll() is None
        got = samples(recorder, device)
        assert len({s.boot_id for s in got}) == 1
        # At least once: a sample whose PUBACK was lost in the outage may come twice.
        first_seen: list[int] = []
        for sample in got:
            if sample.seq not in first_seen:
                first_seen.append(sample.seq)
        assert first_seen == list(range(len(first_seen))), "every seq, no gap, in order"
        assert all(s.outbox_dropped == 0 for s in got)
        # The agent announced itself again on reconnecting (the restarted broker kept nothing).
        await recorder.wait_for(
            lambda: len([s for s in states(recorder, device) if s.online]) >= 2, 5, "a new birth"
        )
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process) == 0


async def test_agent_republishes_birth_when_a_server_announces_itself(
    mosquitto: MosquittoBroker,
    agent_config: Callable[..., Path],
    start_agent: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    device = "mfp-daemon-srv"
    async with Recorder(mosquitto, topics.state(device)) as recorder:
        process = start_agent(agent_config(device))
        await recorder.wait_for(lambda: states(recorder, device), 10, "birth")
        await asyncio.sleep(0.5)  # let the agent subscribe to the server state

        def births() -> list[DeviceState]:
            return [s for s in states(recorder, device) if s.online]

        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as server:
            announcement = {
                "v": 1,
                "online": True,
                "ts": isoformat_z(utcnow()),
                "instance": "srv-a",
            }
            await server.publish(topics.SERVER_STATE, json.dumps(announcement), qos=1, retain=True)
            await recorder.wait_for(lambda: len(births()) == 2, 5, "a second birth")
            assert births()[1].boot_id == births()[0].boot_id
            first_ts, second_ts = births()[0].ts, births()[1].ts
            assert first_ts is not None
            assert second_ts is not None
            assert second_ts > first_ts

            # The same announcement again is no news: no birth.
            await server.publish(topics.SERVER_STATE, json.dumps(announcement), qos=1, retain=True)
            # A malformed one is ignored and does not hurt the agent.
            await server.publish(topics.SERVER_STATE, b"{not json", qos=1)
            await asyncio.sleep(1.0)
            assert len(births()) == 2
            # A newer announcement is.
            newer = {**announcement, "ts": isoformat_z(utcnow())}
            await server.publish(topics.SERVER_STATE, json.dumps(newer), qos=1, retain=True)
            await recorder.wait_for(lambda: len(births()) == 3, 5, "a third birth")
            await server.publish(topics.SERVER_STATE, b"", qos=1, retain=True)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process) == 0


async def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ndevice_id = "m-1"\nintervl_s = 5\n')
    result = await asyncio.to_thread(agent_run_refused, config)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "intervl_s: unknown key" in lines[0]


async def test_real_profile_without_simulate_is_refused(
    agent_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = agent_config("mfp-daemon-real", simulate=False)
    result = await asyncio.to_thread(agent_run_refused, config)
    assert result.returncode == 2
    assert "simulate = true" in result.stderr.decode()
