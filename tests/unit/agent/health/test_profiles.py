"""Simulated device profiles: repeatable by seed, values in range, faults that come and go."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from agent.health.collectors import Reading, status_of
from agent.health.profiles import ProfileOptions, create_profile, profile_names
from shared.errors import ConfigError


async def run_profile(name: str, steps: int, seed: int = 7, device: str = "dev-1") -> list[Reading]:
    profile = create_profile(name, ProfileOptions(device_id=device, seed=seed), simulate=True)
    return [await profile.collect() for _ in range(steps)]


@pytest.mark.parametrize("name", ["mfp", "imaging", "server"])
async def test_same_seed_same_values(name: str) -> None:
    assert await run_profile(name, 50) == await run_profile(name, 50)
    assert await run_profile(name, 50) != await run_profile(name, 50, seed=8)


@pytest.mark.parametrize("name", ["mfp", "imaging", "server"])
async def test_metrics_carry_the_profile_prefix_and_stay_in_range(name: str) -> None:
    for reading in await run_profile(name, 300):
        assert reading.metrics
        for metric, value in reading.metrics.items():
            assert metric.startswith(f"{name}.")
            if "percent" in metric:
                assert 0 <= value <= 100, (metric, value)
            if metric.split(":")[0].endswith(("_up", "jammed", "degraded")):
                assert value in (0.0, 1.0)


async def test_mfp_pages_rise_and_toner_falls_then_is_replaced() -> None:
    readings = await run_profile("mfp", 3000)
    pages = [r.metrics["mfp.pages_total"] for r in readings]
    assert pages == sorted(pages)
    assert pages[-1] > pages[0]
    black = [r.metrics["mfp.toner_black_percent"] for r in readings]
    assert any(later > earlier + 50 for earlier, later in itertools.pairwise(black))


async def test_mfp_faults_appear_and_status_follows() -> None:
    readings = await run_profile("mfp", 3000)
    codes = Counter(f["code"].split("-")[0] for r in readings for f in r.faults)
    assert codes["J"] > 0, "paper jams happen now and then"
    assert codes["TONER"] > 0
    statuses = {status_of(r.faults) for r in readings}
    assert statuses == {"ok", "warning", "fault"}
    jammed = [r for r in readings if r.metrics["mfp.jammed"] == 1.0]
    assert all(status_of(r.faults) == "fault" for r in jammed)


async def test_imaging_peer_goes_unreachable_and_cache_fills() -> None:
    readings = await run_profile("imaging", 2000)
    down = [r for r in readings if r.metrics["imaging.dicom_peer_up:pacs"] == 0.0]
    assert down, "the PACS is unreachable now and then"
    assert all(any(f["code"] == "DICOM-ECHO-FAIL-PACS" for f in r.faults) for r in down)
    assert all("imaging.dicom_echo_ms:pacs" not in r.metrics for r in down)
    cache = [r.metrics["imaging.cache_disk_percent"] for r in readings]
    assert max(cache) >= 85
    assert any(f["code"].startswith("CACHE-") for r in readings for f in r.faults)


async def test_server_services_go_down() -> None:
    readings = await run_profile("server", 2000)
    assert any(f["code"].startswith("SVC-DOWN-") for r in readings for f in r.faults)


async def test_devices_of_one_seed_differ() -> None:
    first = await run_profile("mfp", 5, device="mfp-a")
    second = await run_profile("mfp", 5, device="mfp-b")
    assert first != second


def test_every_profile_is_simulated_and_the_mfp_is_real_over_snmp() -> None:
    assert profile_names(simulated=True) == ["imaging", "mfp", "server"]
    assert "mfp" in profile_names(simulated=False)
    # A real MFP needs its SNMP target; the message says how to give one.
    with pytest.raises(ConfigError, match=r"\[agent\.snmp\].*simulate = true"):
        create_profile("mfp", ProfileOptions(device_id="mfp-1"), simulate=False)
    real = create_profile(
        "mfp",
        ProfileOptions(device_id="mfp-1", targets={"snmp_community": "public"}),
        simulate=False,
    )
    assert real.name == "mfp"
    with pytest.raises(ConfigError, match="unknown profile"):
        create_profile("toaster", ProfileOptions(device_id="t-1"), simulate=True)
