"""The real imaging profile against a real pynetdicom Verification SCP on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from agent.config import load_agent_settings
from agent.health.collectors import status_of
from agent.health.profiles import ImagingProfile, ProfileOptions, create_profile, profile_names
from agent.health.profiles.dicom_echo import echo_peer
from agent.health.profiles.imaging import DicomPeer, ImagingTargets
from shared.errors import ConfigError
from tests.fixtures.dicom import (
    TIMEOUT_S,
    VerificationScp,
    dicom_peer,
    imaging_agent_config,
    imaging_profile,
)
from tests.fixtures.ports import free_port
from tests.fixtures.profiles import fault_codes


def test_imaging_and_server_have_real_collectors() -> None:
    assert {"imaging", "server"} <= set(profile_names(simulated=False))
    assert {"imaging", "server"} <= set(profile_names(simulated=True))


async def test_a_peer_that_stops_raises_the_fault_and_its_return_clears_it(
    scp: VerificationScp,
) -> None:
    profile = imaging_profile([dicom_peer(scp.port)])

    up = await profile.collect()
    assert up.metrics["imaging.dicom_peer_up:pacs"] == 1.0
    assert up.metrics["imaging.dicom_echo_ms:pacs"] >= 0
    assert up.faults == []

    scp.stop()
    down = await profile.collect()
    assert down.metrics["imaging.dicom_peer_up:pacs"] == 0.0
    assert "imaging.dicom_echo_ms:pacs" not in down.metrics
    message = fault_codes(down)["DICOM-ECHO-FAIL-PACS"]
    assert "[refused]: connection refused" in message
    assert f"PACS@127.0.0.1:{scp.port}" in message
    assert status_of(down.faults) == "fault"

    scp.start()
    back = await profile.collect()
    assert back.metrics["imaging.dicom_peer_up:pacs"] == 1.0
    assert "imaging.dicom_echo_ms:pacs" in back.metrics
    assert back.faults == []


async def test_a_rejected_association_is_told_apart_and_names_the_calling_title() -> None:
    scp = VerificationScp(require_calling=["CT_ROOM_2"])
    scp.start()
    try:
        rejected = await imaging_profile([dicom_peer(scp.port)]).collect()
        message = fault_codes(rejected)["DICOM-ECHO-FAIL-PACS"]
        assert "[rejected]: association rejected" in message
        assert "refused" not in message
        assert "Calling AE title not recognised" in message
        assert "'FIELDLINK'" in message
        # the same peer answers the console's configured title
        accepted = await imaging_profile([dicom_peer(scp.port)], calling="CT_ROOM_2").collect()
        assert accepted.metrics["imaging.dicom_peer_up:pacs"] == 1.0
    finally:
        scp.stop()


async def test_a_wrong_called_title_is_rejected_too() -> None:
    scp_strict = VerificationScp(ae_title="PACS", require_called=True)
    scp_strict.start()
    try:
        reading = await imaging_profile(
            [dicom_peer(scp_strict.port, ae_title="NOT_PACS")]
        ).collect()
        assert "Called AE title not recognised" in fault_codes(reading)["DICOM-ECHO-FAIL-PACS"]
    finally:
        scp_strict.stop()


async def test_a_peer_that_accepts_the_connection_but_never_answers_times_out() -> None:
    # A hung PACS, or a proxy that accepts and forwards nowhere: TCP connects, DICOM never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        profile = create_profile(
            "imaging",
            ProfileOptions(
                "ct-1",
                targets={"dicom_peers": [dicom_peer(port)], "dicom": {"timeout_s": 0.5}},
            ),
            simulate=False,
        )
        reading = await profile.collect()
    message = fault_codes(reading)["DICOM-ECHO-FAIL-PACS"]
    assert "[timeout]: timed out" in message
    assert "no association response within 0.25 s" in message
    assert "refused" not in message
    assert "rejected" not in message


def test_refused_rejected_and_timeout_are_three_outcomes() -> None:
    closed = free_port()
    refused = echo_peer(DicomPeer("pacs", "PACS", "127.0.0.1", closed), "FIELDLINK", TIMEOUT_S)
    assert refused.failure == "refused"
    scp = VerificationScp(require_calling=["OTHER"])
    scp.start()
    try:
        rejected = echo_peer(DicomPeer("pacs", "PACS", "127.0.0.1", scp.port), "FIELDLINK", 2.0)
    finally:
        scp.stop()
    assert rejected.failure == "rejected"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        timed_out = echo_peer(DicomPeer("pacs", "PACS", "127.0.0.1", port), "FIELDLINK", 0.6)
    assert timed_out.failure == "timeout"


@pytest.mark.parametrize(
    ("peer_scp", "detail"),
    [
        (VerificationScp(echo_status=0x0211), "C-ECHO status 0x0211"),
        (VerificationScp(contexts=(CTImageStorage,)), "not the Verification SOP class"),
    ],
    ids=["error-status", "no-verification"],
)
async def test_a_peer_that_answers_but_not_with_a_good_echo(
    peer_scp: VerificationScp, detail: str
) -> None:
    peer_scp.start()
    try:
        reading = await imaging_profile([dicom_peer(peer_scp.port)]).collect()
    finally:
        peer_scp.stop()
    message = fault_codes(reading)["DICOM-ECHO-FAIL-PACS"]
    assert "failed [failed]: " in message
    assert detail in message
    assert reading.metrics["imaging.dicom_peer_up:pacs"] == 0.0


async def test_two_peers_are_reported_each_on_its_own(scp: VerificationScp) -> None:
    reading = await imaging_profile(
        [dicom_peer(scp.port), dicom_peer(free_port(), name="worklist")]
    ).collect()
    assert reading.metrics["imaging.dicom_peer_up:pacs"] == 1.0
    assert reading.metrics["imaging.dicom_peer_up:worklist"] == 0.0
    assert set(fault_codes(reading)) == {"DICOM-ECHO-FAIL-WORKLIST"}


async def test_cache_disk_percent_and_an_unreadable_cache(tmp_path: Path) -> None:
    reading = await imaging_profile([], image_cache_path=str(tmp_path)).collect()
    assert 0 <= reading.metrics["imaging.cache_disk_percent"] <= 100
    missing = await imaging_profile([], image_cache_path=str(tmp_path / "gone")).collect()
    assert "imaging.cache_disk_percent" not in missing.metrics
    assert "cannot be read" in fault_codes(missing)["CACHE-UNAVAILABLE"]


async def test_the_agent_configuration_builds_the_profile(
    tmp_path: Path, scp: VerificationScp
) -> None:
    config = imaging_agent_config(tmp_path, None, "ct-1", scp.port)
    settings = load_agent_settings(config, environ={})
    profile = create_profile(
        "imaging", ProfileOptions("ct-1", targets=settings.profile_targets), simulate=False
    )
    assert isinstance(profile, ImagingProfile)
    assert profile.targets.calling_ae_title == "CT_ROOM_2"
    reading = await profile.collect()
    assert reading.metrics["imaging.dicom_peer_up:pacs"] == 1.0
    assert reading.metrics["imaging.service_up:dicom_store"] == 1.0


def test_peers_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FIELDLINK_DICOM_PEERS": '[{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5"}]',
        "FIELDLINK_DICOM": '{"calling_ae_title": "US_1"}',
    }
    settings = load_agent_settings(None, environ=env, device_id="us-1", profile="imaging")
    targets = ImagingTargets.parse(settings.profile_targets)
    assert targets.peers == (DicomPeer("pacs", "PACS", "10.0.0.5", 104),)
    assert targets.calling_ae_title == "US_1"


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"dicom_peers": [{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 0}]}, "port"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "A" * 17, "host": "h"}]}, "ae_title"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "PA\\CS", "host": "h"}]}, "ae_title"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "PA\x00CS", "host": "h"}]}, "ae_title"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "   ", "host": "h"}]}, "ae_title"),
        ({"dicom_peers": [{"name": "../etc", "ae_title": "PACS", "host": "h"}]}, "name"),
        ({"dicom_peers": [{"name": "PACS", "ae_title": "PACS", "host": "h"}]}, "name"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "PACS"}]}, "host"),
        ({"dicom_peers": [{"name": "pacs", "ae_title": "P", "host": "h", "tls": 1}]}, "tls"),
        (
            {
                "dicom_peers": [
                    {"name": "pacs", "ae_title": "A", "host": "h"},
                    {"name": "pacs", "ae_title": "B", "host": "h"},
                ]
            },
            "own name",
        ),
        ({"dicom": {"calling_ae_title": "X" * 20}}, "calling_ae_title"),
        ({"dicom": {"timeout_s": 0}}, "timeout_s"),
        ({"services_check": [{"name": "viewer"}]}, "either process or port"),
        ({"services_check": [{"name": "v", "process": "a", "port": 1}]}, "either process or port"),
        ({"services_check": [{"name": "v", "process": "$(reboot)"}]}, "process"),
    ],
)
def test_bad_tables_are_refused_naming_the_key(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        ImagingTargets.parse(table)


def test_the_configuration_refuses_bad_tables_at_load(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\ndevice_id = "ct-1"\nprofile = "imaging"\n'
        '[[agent.dicom_peers]]\nname = "pacs"\nae_title = "WAY_TOO_LONG_AE_TITLE"\nhost = "h"\n'
    )
    with pytest.raises(ConfigError, match=r"agent\.toml: \[\[agent\.dicom_peers\]\] #1 ae_title"):
        load_agent_settings(config, environ={})
    # a simulated console does not need them
    settings = load_agent_settings(config, environ={}, simulate=True)
    assert settings.profile == "imaging"
    with pytest.raises(ConfigError, match="less than collector_timeout_s"):
        load_agent_settings(
            None,
            environ={},
            device_id="ct-1",
            profile="imaging",
            dicom={"timeout_s": 10},
            collector_timeout_s=5,
        )
    with pytest.raises(ConfigError, match="dicom_peers: must be a JSON array"):
        load_agent_settings(None, environ={}, device_id="ct-1", dicom_peers="pacs")


async def test_a_hung_echo_is_not_stacked_on_the_next_sample() -> None:
    # The collector's bound cancels the sample; the worker thread is still waiting.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        profile = create_profile(
            "imaging",
            ProfileOptions(
                "ct-1", targets={"dicom_peers": [dicom_peer(port)], "dicom": {"timeout_s": 1.0}}
            ),
            simulate=False,
        )
        first = asyncio.ensure_future(profile.collect())
        await asyncio.sleep(0.1)
        first.cancel()
        second = await profile.collect()
        assert "previous echo is still waiting" in fault_codes(second)["DICOM-ECHO-FAIL-PACS"]
        with pytest.raises(asyncio.CancelledError):
            await first


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    # .invalid never resolves (RFC 6761)
    result = echo_peer(DicomPeer("pacs", "PACS", "pacs.fieldlink.invalid", 104), "FIELDLINK", 2.0)
    assert result.failure == "unreachable"
    assert result.detail.startswith("host name not resolved")
