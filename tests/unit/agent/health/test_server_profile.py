"""The real server profile: /proc/mdstat, smartctl --json and systemctl show, from real outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_agent_settings
from agent.health.collectors import status_of
from agent.health.profiles.mdstat import parse_mdstat
from agent.health.profiles.server import ServerTargets, parse_systemctl_show
from agent.health.profiles.smartctl import disk_label, parse_smartctl
from shared.errors import ConfigError
from tests.fixtures.profiles import fault_codes, server_profile

DATA = Path(__file__).parents[3] / "data"


def _mdstat(name: str) -> str:
    return (DATA / "mdstat" / f"{name}.txt").read_text()


def _smart(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "smartctl" / f"{name}.json").read_text())
    return loaded


# --- /proc/mdstat ---


def test_healthy_arrays_including_raid0_without_redundancy() -> None:
    arrays = parse_mdstat(_mdstat("healthy"))
    assert [a.name for a in arrays] == ["md2", "md1", "md0"]
    assert [a.level for a in arrays] == ["raid0", "raid1", "raid1"]
    assert not any(a.degraded for a in arrays)
    assert arrays[1].slots == 2
    assert arrays[1].up == 2
    assert arrays[1].members_map == "UU"


def test_degraded_arrays_a_failed_member_a_missing_one_and_an_inactive_array() -> None:
    md0, md1, md127 = parse_mdstat(_mdstat("degraded"))
    assert (md0.level, md0.slots, md0.up, md0.members_map, md0.failed) == ("raid5", 4, 3, "UUU_", 1)
    assert md0.degraded
    assert md1.degraded
    assert md1.failed == 0
    assert not md127.active
    assert md127.degraded


def test_a_resync_is_progress_not_degradation() -> None:
    md1, md0 = parse_mdstat(_mdstat("resyncing"))
    assert md0.sync_action == "resync"
    assert md0.sync_percent == 12.6
    assert not md0.degraded
    assert md1.sync_action is None  # resync=DELAYED: waiting for md0
    assert not md1.degraded


def test_a_rebuild_after_a_disk_swap_stays_degraded_until_done() -> None:
    md126, md0 = parse_mdstat(_mdstat("recovering"))
    assert md126.active
    assert not md126.degraded  # (auto-read-only) is still a healthy mirror
    assert md0.sync_action == "recovery"
    assert md0.sync_percent == 27.9
    assert md0.degraded


def test_an_intel_rst_container_is_inactive_by_design_its_member_array_counts() -> None:
    md126, md127 = parse_mdstat(_mdstat("imsm-container"))
    assert md126.active
    assert not md126.degraded
    assert not md126.container
    assert not md127.active
    assert md127.container
    assert not md127.degraded


def test_an_array_written_on_one_line() -> None:
    (md1,) = parse_mdstat("md1 : active raid1 sda1[0] 20478912 blocks [2/1] [U_]\n")
    assert md1.degraded
    assert md1.members_map == "U_"


@pytest.mark.parametrize(
    "text", ["", "Personalities : \nunused devices: <none>\n", "garbage\n\x00"]
)
def test_no_arrays(text: str) -> None:
    assert parse_mdstat(text) == []


async def test_raid_metrics_and_faults(tmp_path: Path) -> None:
    mdstat = tmp_path / "mdstat"
    mdstat.write_text(_mdstat("healthy"))
    profile = server_profile(mdstat_path=str(mdstat))
    healthy = await profile.collect()
    assert healthy.metrics["server.raid_arrays"] == 3.0
    assert healthy.metrics["server.raid_degraded"] == 0.0
    assert healthy.faults == []

    mdstat.write_text(_mdstat("degraded"))
    degraded = await profile.collect()
    assert degraded.metrics["server.raid_degraded"] == 3.0
    codes = fault_codes(degraded)
    assert set(codes) == {"RAID-DEGRADED-MD0", "RAID-DEGRADED-MD1", "RAID-DEGRADED-MD127"}
    assert codes["RAID-DEGRADED-MD0"] == (
        "RAID array md0 (raid5) degraded: 3 of 4 members up [UUU_], 1 failed"
    )
    assert "inactive" in codes["RAID-DEGRADED-MD127"]
    assert status_of(degraded.faults) == "fault"

    mdstat.write_text(_mdstat("recovering"))
    rebuilding = await profile.collect()
    assert rebuilding.metrics["server.raid_sync_percent:md0"] == 27.9
    assert "recovery 27.9%" in fault_codes(rebuilding)["RAID-DEGRADED-MD0"]

    mdstat.write_text(_mdstat("resyncing"))
    resync = await profile.collect()
    assert resync.metrics["server.raid_sync_percent:md0"] == 12.6
    assert resync.faults == []


async def test_no_md_driver_no_raid_metrics(tmp_path: Path) -> None:
    reading = await server_profile(mdstat_path=str(tmp_path / "absent")).collect()
    assert not any(name.startswith("server.raid") for name in reading.metrics)


# --- smartctl --json -a ---


def test_a_healthy_ata_disk() -> None:
    report = parse_smartctl(_smart("ata-healthy"), "/dev/sda")
    assert report.disk == "sda"
    assert report.passed is True
    assert report.temperature_c == 33.0
    assert report.reallocated == 0
    assert report.pending == 0
    assert report.error is None


def test_a_failing_ata_disk() -> None:
    report = parse_smartctl(_smart("ata-failing"), "/dev/sdb")
    assert report.passed is False
    assert report.reallocated == 1208
    assert report.pending == 16


def test_an_nvme_disk() -> None:
    report = parse_smartctl(_smart("nvme-healthy"), "/dev/nvme0")
    assert report.passed is True
    assert report.temperature_c == 38.0
    assert report.media_errors == 0
    assert report.life_used_percent == 3.0
    assert report.reallocated is None


def test_a_sleeping_disk_is_left_asleep_and_not_a_fault() -> None:
    report = parse_smartctl(_smart("ata-standby"), "/dev/sdc")
    assert report.standby
    assert report.error is None


@pytest.mark.parametrize(
    ("fixture", "error"),
    [
        # both captured from smartctl 7.3 on this machine (a virtio disk has no SMART)
        ("open-failed", "Smartctl open device: /dev/nonexistent [SAT] failed: No such device"),
        ("vda-unsupported", "/dev/vda: Unable to detect device type"),
    ],
)
def test_a_disk_smartctl_cannot_read(fixture: str, error: str) -> None:
    report = parse_smartctl(_smart(fixture), "/dev/x")
    assert report.error == error
    assert report.passed is None


@pytest.mark.parametrize(
    ("device", "label"),
    [
        ("/dev/sda", "sda"),
        ("/dev/nvme0n1", "nvme0n1"),
        ("/dev/disk/by-id/ata-WDC_WD20EFRX", "ata-wdc_wd20efrx"),
        ("/dev/bus/0", "0"),
    ],
)
def test_disk_labels(device: str, label: str) -> None:
    assert disk_label(device) == label


def test_hostile_smartctl_json_does_not_break_the_parser() -> None:
    for report in (
        {},
        {"smartctl": {"exit_status": "x"}},
        {"smart_status": "yes", "temperature": {"current": "hot"}},
        {"ata_smart_attributes": {"table": [{"id": 5, "raw": {"value": True}}, "x", None]}},
    ):
        parsed = parse_smartctl(report, "/dev/sda")
        assert parsed.passed is None
        assert parsed.temperature_c is None
        assert parsed.reallocated is None


# --- systemctl show ---


def test_systemctl_show_blocks_in_argument_order() -> None:
    blocks = parse_systemctl_show((DATA / "systemctl" / "show.txt").read_text())
    assert [b["Id"] for b in blocks] == [
        "ssh.service",
        "postgresql@15-main.service",
        "backup.timer",
        "nosuch.service",
    ]
    assert blocks[1]["ActiveState"] == "failed"
    assert blocks[3]["LoadState"] == "not-found"


async def test_without_systemd_units_are_not_reported(tmp_path: Path) -> None:
    profile = server_profile(systemd_units=["sshd"], systemd_dir=str(tmp_path / "absent"))
    reading = await profile.collect()
    assert not any(name.startswith("server.service_up") for name in reading.metrics)


# --- configuration ---


def test_the_configuration_builds_theserver_profile(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\ndevice_id = "srv-1"\nprofile = "server"\n'
        'systemd_units = ["sshd.service", "postgresql"]\nsmart_disks = ["/dev/sda"]\n'
    )
    settings = load_agent_settings(config, environ={})
    targets = ServerTargets.parse(settings.profile_targets)
    assert targets.units == ("sshd.service", "postgresql")
    assert targets.smart_disks == ("/dev/sda",)
    env = load_agent_settings(
        None,
        environ={"FIELDLINK_SYSTEMD_UNITS": "sshd, nginx", "FIELDLINK_DEVICE_ID": "srv-1"},
        profile="server",
    )
    assert env.systemd_units == ("sshd", "nginx")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("systemd_units", ["--root=/tmp"], "systemd_units"),  # an option smuggled as a unit
        ("systemd_units", ["a b"], "systemd_units"),
        ("systemd_units", ["x" * 60], "systemd_units"),
        ("smart_disks", ["-d", "/dev/sda"], "smart_disks"),
        ("smart_disks", ["/etc/shadow;x"], "smart_disks"),
        ("smart_disks", ["sda"], "smart_disks"),
    ],
)
def test_bad_units_and_disks_are_refused_at_load(key: str, value: list[str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_agent_settings(None, environ={}, device_id="srv-1", profile="server", **{key: value})
