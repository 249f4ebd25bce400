"""The real server profile: /proc/mdstat, smartctl --json and systemctl show, from real outputs.

The part of tests/unit/agent/health/test_server_profile.py that leaves the test's process
(it runs smartctl and stand-in programs); the in-process rest stays there.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from agent.health.profiles.server import REALLOC_WARN
from tests.fixtures.profiles import fault_codes, server_profile

DATA = Path(__file__).parents[3] / "data"


def _stand_in(tmp_path: Path, name: str, script: str) -> str:
    # systemd does not run in this test environment, and its disks have no SMART: a stand-in
    # command prints what the real one printed (the captured outputs under tests/data/).
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_smart_metrics_and_faults_from_smartctl_outputs(tmp_path: Path) -> None:
    by_device = {
        "/dev/sda": "ata-healthy",
        "/dev/sdb": "ata-failing",
        "/dev/nvme0": "nvme-healthy",
        "/dev/sdc": "ata-standby",
        "/dev/sdd": "open-failed",
    }
    cases = "\n".join(
        f"  {dev}) cat {DATA / 'smartctl' / name}.json ;;" for dev, name in by_device.items()
    )
    # the device is the last argument, after "--"
    script = f'for last; do :; done\ncase "$last" in\n{cases}\nesac\nexit 0'
    smartctl = _stand_in(tmp_path, "smartctl", script)
    profile = server_profile(smart=True, smartctl=smartctl, smart_disks=list(by_device))
    reading = await profile.collect()
    metrics = reading.metrics
    assert metrics["server.smart_ok:sda"] == 1.0
    assert metrics["server.smart_temperature_c:sda"] == 33.0
    assert metrics["server.smart_reallocated_sectors:sda"] == 0.0
    assert metrics["server.smart_ok:sdb"] == 0.0
    assert metrics["server.smart_reallocated_sectors:sdb"] == 1208.0
    assert metrics["server.smart_pending_sectors:sdb"] == 16.0
    assert metrics["server.smart_life_used_percent:nvme0"] == 3.0
    assert not any(name.endswith(":sdc") for name in metrics)
    codes = fault_codes(reading)
    assert set(codes) == {
        "SMART-FAIL-SDB",
        "SMART-REALLOC-SDB",
        "SMART-PENDING-SDB",
        "SMART-UNAVAILABLE-SDD",
    }
    assert "1208 reallocated sectors on sdb" in codes["SMART-REALLOC-SDB"]
    assert 1208 >= REALLOC_WARN
    assert [f["severity"] for f in reading.faults if f["code"] == "SMART-FAIL-SDB"] == ["critical"]
    # SMART is read every few minutes, its last values reported in between
    (tmp_path / "smartctl").write_text("#!/bin/sh\nexit 1\n")
    again = await profile.collect()
    assert again.metrics == reading.metrics
    assert again.faults == reading.faults


@pytest.mark.skipif(shutil.which("smartctl") is None, reason="smartmontools is not installed")
async def test_the_real_smartctl_on_a_disk_it_cannot_open(tmp_path: Path) -> None:
    reading = await server_profile(
        smart=True, smart_disks=["/dev/fieldlink-no-such-disk"]
    ).collect()
    assert "SMART-UNAVAILABLE-FIELDLINK-NO-SUCH-DISK" in fault_codes(reading)
    assert not any(name.startswith("server.smart_") for name in reading.metrics)


async def test_unit_states(tmp_path: Path) -> None:
    systemd = tmp_path / "run-systemd-system"
    systemd.mkdir()
    systemctl = _stand_in(tmp_path, "systemctl", f"cat {DATA / 'systemctl' / 'show.txt'}")
    units = ["sshd", "postgresql@15-main", "backup.timer", "nosuch"]
    profile = server_profile(systemd_units=units, systemd_dir=str(systemd), systemctl=systemctl)
    reading = await profile.collect()
    assert reading.metrics["server.service_up:sshd"] == 1.0  # an alias of ssh.service
    assert reading.metrics["server.service_up:postgresql@15-main"] == 0.0
    assert reading.metrics["server.service_up:backup.timer"] == 0.0
    codes = fault_codes(reading)
    assert codes["SVC-DOWN-POSTGRESQL@15-MAIN"] == "service postgresql@15-main: failed (failed)"
    assert codes["SVC-DOWN-NOSUCH"] == "service nosuch: unit not found"
    assert "SVC-DOWN-SSHD" not in codes
