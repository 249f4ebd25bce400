"""Collectors: the system collector on fixed host values, time bounds, failures left out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import pytest

from agent.health.collectors import (
    Reading,
    SystemCollector,
    collect_all,
    create_collector,
    registered_collectors,
    status_of,
)
from agent.health.collectors.system import NetworkErrors, read_host


class FixedHost:
    """A HostSource of fixed values."""

    def __init__(
        self,
        *,
        disks: Mapping[str, float] | None = None,
        temps: Mapping[str, float] | None = None,
        block: threading.Event | None = None,
    ) -> None:
        self.disks = dict(disks if disks is not None else {"/": 72.1})
        self.temps = dict(temps or {})
        self.block = block

    def cpu_percent(self) -> float:
        if self.block is not None:
            self.block.wait(5)
        return 3.2

    def mem_percent(self) -> float:
        return 41.0

    def disk_percents(self) -> dict[str, float]:
        return dict(self.disks)

    def temperatures(self) -> dict[str, float]:
        return dict(self.temps)

    def boot_time(self) -> float:
        return 1_000.0

    def network_errors(self) -> NetworkErrors:
        return NetworkErrors(1, 2, 3, 4)

    def load_average(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)


class NamedCollector:
    def __init__(self, name: str, *, metrics: dict[str, float] | None = None) -> None:
        self.name = name
        self.metrics = metrics or {f"{name}.value": 1.0}

    async def collect(self) -> Reading:
        return Reading(metrics=dict(self.metrics))


class HangingCollector(NamedCollector):
    async def collect(self) -> Reading:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class RaisingCollector(NamedCollector):
    async def collect(self) -> Reading:
        raise OSError("SNMP agent refused")


def test_read_host_names_every_metric() -> None:
    host = FixedHost(disks={"/": 72.1, "/data": 10.0}, temps={"coretemp.Package id 0": 48.0})
    metrics = read_host(host, now=124_456.0)
    assert metrics == {
        "cpu_percent": 3.2,
        "mem_percent": 41.0,
        "disk_percent:/": 72.1,
        "disk_percent:/data": 10.0,
        "temp_c:coretemp.Package_id_0": 48.0,
        "uptime_s": 123_456.0,
        "net_errors_in": 1.0,
        "net_errors_out": 2.0,
        "net_drops_in": 3.0,
        "net_drops_out": 4.0,
        "load1": 0.5,
        "load5": 0.25,
        "load15": 0.125,
    }


def test_no_temperature_sensors_means_no_temperature_metrics() -> None:
    metrics = read_host(FixedHost(temps={}), now=2_000.0)
    assert not [name for name in metrics if name.startswith("temp_c:")]


async def test_system_collector_reads_its_source_in_a_thread() -> None:
    reading = await SystemCollector(FixedHost()).collect()
    assert reading.metrics["cpu_percent"] == 3.2
    assert reading.faults == []


async def test_system_collector_on_real_psutil_reports_the_root_disk() -> None:
    reading = await SystemCollector().collect()
    assert 0 <= reading.metrics["mem_percent"] <= 100
    assert any(name.startswith("disk_percent:") for name in reading.metrics)
    assert reading.metrics["uptime_s"] > 0


async def test_hanging_collector_is_cut_off_and_the_others_still_report() -> None:
    reading = await collect_all(
        [HangingCollector("snmp"), NamedCollector("dicom"), NamedCollector("host")], timeout_s=0.2
    )
    assert reading.metrics == {"dicom.value": 1.0, "host.value": 1.0}


async def test_raising_collector_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    reading = await collect_all([RaisingCollector("snmp"), NamedCollector("host")], timeout_s=1.0)
    assert reading.metrics == {"host.value": 1.0}
    assert "collector snmp failed" in caplog.text


async def test_stuck_system_read_is_skipped_while_busy_not_piled_up() -> None:
    release = threading.Event()
    collector = SystemCollector(FixedHost(block=release))
    try:
        first = await collect_all([collector, NamedCollector("other")], timeout_s=0.1)
        second = await collect_all([collector, NamedCollector("other")], timeout_s=0.1)
    finally:
        release.set()
    assert "cpu_percent" not in first.metrics
    assert "cpu_percent" not in second.metrics
    assert second.metrics == {"other.value": 1.0}
    await asyncio.sleep(0.1)
    third = await collect_all([collector], timeout_s=1.0)
    assert third.metrics["cpu_percent"] == 3.2


async def test_non_finite_values_are_left_out() -> None:
    reading = await collect_all(
        [NamedCollector("x", metrics={"x.nan": float("nan"), "x.inf": float("inf"), "x.ok": 2})],
        timeout_s=1.0,
    )
    assert reading.metrics == {"x.ok": 2}


def test_system_collector_is_registered_by_name() -> None:
    assert "system" in registered_collectors()
    assert isinstance(create_collector("system"), SystemCollector)


@pytest.mark.parametrize(
    ("severities", "status"),
    [
        ([], "ok"),
        (["info"], "ok"),
        (["warning"], "warning"),
        (["warning", "error"], "fault"),
        (["critical"], "fault"),
    ],
)
def test_status_follows_the_worst_fault(severities: list[str], status: str) -> None:
    faults = [{"code": "X", "severity": s, "message": ""} for s in severities]
    assert status_of(faults) == status  # type: ignore[arg-type]
