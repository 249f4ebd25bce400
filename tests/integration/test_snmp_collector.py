"""The Printer-MIB collector against a real SNMP agent (snmpsim) serving RFC 3805 recordings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.health.collectors.snmp import PrinterMibCollector, ProfileReading, SnmpTarget
from shared import topics
from shared.models import HealthSample, parse_message
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import start_agent_run
from tests.fixtures.snmpsim import (
    RECORDINGS,
    V3_USERS,
    SnmpSimulator,
    V3Credentials,
    responder_venv,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def snmpsim_venv() -> Path:
    return responder_venv()


@pytest.fixture(scope="module")
def printers(snmpsim_venv: Path) -> Iterator[SnmpSimulator]:
    with SnmpSimulator(snmpsim_venv, sorted(RECORDINGS.glob("*.snmprec"))) as simulator:
        yield simulator


@pytest.fixture
def own_printer(snmpsim_venv: Path) -> Iterator[SnmpSimulator]:
    """A responder of the test's own, to stop or to change."""
    with SnmpSimulator(snmpsim_venv, [RECORDINGS / "colour.snmprec"]) as simulator:
        yield simulator


def v2c(sim: SnmpSimulator, community: str, **extra: object) -> SnmpTarget:
    return SnmpTarget(host=sim.host, port=sim.port, community=community, **extra)  # type: ignore[arg-type]


async def poll(target: SnmpTarget) -> ProfileReading:
    async with PrinterMibCollector(target) as collector:
        return await collector.collect()


def codes(reading: ProfileReading) -> dict[str, str]:
    return {fault["code"]: fault["severity"] for fault in reading.faults}


async def test_a_mono_printer_reports_toner_supplies_trays_pages_and_identity(
    printers: SnmpSimulator,
) -> None:
    reading = await poll(v2c(printers, "mono"))
    assert reading.reachable, reading.reason
    assert reading.metrics == {
        "mfp.toner_black_percent": 42.0,
        "mfp.supply_percent:opc": 90.0,
        # A receptacle: 75 of 100 left free, so 25 % full.
        "mfp.supply_percent:waste_toner": 25.0,
        "mfp.paper_tray1_percent": 50.0,
        "mfp.pages_total": 123456.0,
    }
    # Special levels are never a percentage.
    assert reading.unknown_levels == {
        "mfp.supply_percent:fuser": "unknown",
        "mfp.paper_tray2_percent": "some_remaining",
    }
    # The power-up event in the alert table is not a fault.
    assert reading.faults == []
    assert reading.inventory == {
        "sys_descr": "ACME LaserWriter M400 (mono) FW 2.4.1",
        "sys_name": "mfp-mono",
        "serial": "MONO-0001",
        "model": "ACME LaserWriter M400",
        "firmware": "2.4.1",
    }
    assert not reading.serial_mismatch


async def test_a_colour_printer_with_a_jam_an_empty_toner_and_a_missing_tray(
    printers: SnmpSimulator,
) -> None:
    reading = await poll(v2c(printers, "colour"))
    assert reading.reachable, reading.reason
    assert reading.metrics["mfp.toner_black_percent"] == 50.0
    assert reading.metrics["mfp.toner_cyan_percent"] == 0.0
    assert reading.metrics["mfp.toner_yellow_percent"] == 8.0
    assert "mfp.toner_magenta_percent" not in reading.metrics
    assert reading.unknown_levels["mfp.toner_magenta_percent"] == "some_remaining"
    assert reading.unknown_levels["mfp.supply_percent:waste_toner"] == "unknown"
    assert reading.metrics["mfp.supply_percent:opc_cyan"] == 70.0
    # Only the marker counting impressions, not the one in 1/10000 inch.
    assert reading.metrics["mfp.pages_total"] == 98765.0
    assert reading.metrics["mfp.paper_tray1_percent"] == 0.0
    assert reading.metrics["mfp.paper_tray2_percent"] == 80.0
    assert reading.unknown_levels["mfp.paper_tray3_percent"] == "unknown"
    assert codes(reading) == {
        "JAM": "error",
        "TONER-OUT-CYAN": "error",
        "TONER-LOW-YELLOW": "warning",
        "PAPER-OUT-TRAY1": "warning",
        "TRAY-MISSING-TRAY3": "warning",
    }
    jam = next(f for f in reading.faults if f["code"] == "JAM")
    assert "duplex unit (area D)" in jam["message"]
    assert "13201" in jam["message"]
    # The model is the printer's hrDeviceDescr, not the processor's.
    assert reading.inventory["model"] == "ACME ColorWriter C500"
    assert reading.inventory["firmware"] == "C500 7.10.2"
    assert reading.inventory["serial"] == "COLOR-0042"


async def test_a_serial_other_than_the_registered_one_is_flagged(printers: SnmpSimulator) -> None:
    reading = await poll(v2c(printers, "mono", expected_serial="MONO-0002"))
    assert reading.serial_mismatch
    assert codes(reading) == {"SERIAL-MISMATCH": "error"}
    same = await poll(v2c(printers, "mono", expected_serial="MONO-0001"))
    assert not same.serial_mismatch
    assert same.faults == []


@pytest.mark.parametrize("creds", V3_USERS, ids=lambda c: f"{c.auth_protocol}-{c.priv_protocol}")
async def test_snmpv3_auth_priv_reads_the_same_device(
    printers: SnmpSimulator, creds: V3Credentials
) -> None:
    target = SnmpTarget(
        host=printers.host,
        port=printers.port,
        version="3",
        user=creds.user,
        auth_protocol=creds.auth_protocol,
        auth_key=creds.auth_key,
        priv_protocol=creds.priv_protocol,
        priv_key=creds.priv_key,
        context="colour",
    )
    reading = await poll(target)
    assert reading.reachable, reading.reason
    assert reading.inventory["serial"] == "COLOR-0042"
    assert "JAM" in codes(reading)


async def test_wrong_v3_keys_or_community_are_unreachable_never_an_exception(
    printers: SnmpSimulator,
) -> None:
    creds = printers.v3
    wrong_key = SnmpTarget(
        host=printers.host,
        port=printers.port,
        version="3",
        user=creds.user,
        auth_protocol=creds.auth_protocol,
        auth_key="not-the-auth-key",
        priv_protocol=creds.priv_protocol,
        priv_key=creds.priv_key,
        context="colour",
        timeout_s=0.5,
        retries=0,
    )
    reading = await poll(wrong_key)
    assert not reading.reachable
    assert reading.reason is not None
    assert reading.reason.startswith("authentication failed")
    assert "not-the-auth-key" not in reading.reason
    assert reading.metrics == {}
    # The right keys with the wrong cipher (AES-128 for an AES-256 user) do not read either.
    strong = V3_USERS[2]
    wrong_cipher = SnmpTarget(
        host=printers.host,
        port=printers.port,
        version="3",
        user=strong.user,
        auth_protocol=strong.auth_protocol,
        auth_key=strong.auth_key,
        priv_protocol="aes",
        priv_key=strong.priv_key,
        context="colour",
        timeout_s=0.5,
        retries=0,
    )
    refused = await poll(wrong_cipher)
    assert not refused.reachable
    assert refused.metrics == {}
    # snmpsim, like most printers, ignores an unknown community: a timeout.
    guessed = await poll(v2c(printers, "private", timeout_s=0.3, retries=0))
    assert not guessed.reachable
    assert guessed.reason == "timeout"


async def test_a_device_that_stops_answering_is_unreachable_then_comes_back(
    own_printer: SnmpSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.health.collectors.snmp")
    async with PrinterMibCollector(
        v2c(own_printer, "colour", timeout_s=0.3, retries=0)
    ) as collector:
        await _stop_and_start(collector, own_printer)
    # One warning for the outage, not one per poll; the community is never logged.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable: timeout" in warnings[0].getMessage()
    assert all("colour" not in r.getMessage() for r in caplog.records)


async def _stop_and_start(collector: PrinterMibCollector, own_printer: SnmpSimulator) -> None:
    assert (await collector.collect()).reachable
    own_printer.stop()
    for _ in range(2):
        gone = await collector.collect()
        assert not gone.reachable
        assert gone.reason == "timeout"
        assert gone.metrics == {}
        assert gone.faults == []
    own_printer.start()
    back = await collector.collect()
    assert back.reachable, back.reason
    assert back.inventory["serial"] == "COLOR-0042"


async def test_an_alert_that_leaves_the_table_clears_its_fault(own_printer: SnmpSimulator) -> None:
    async with PrinterMibCollector(v2c(own_printer, "colour")) as collector:
        await _clear_the_jam(collector, own_printer)


async def _clear_the_jam(collector: PrinterMibCollector, own_printer: SnmpSimulator) -> None:
    first = await collector.collect()
    assert "JAM" in codes(first)
    # Someone clears the jam: its alert row leaves the table and the jammed bit drops.
    jam_row = ".43.18.1.1."
    lines = [
        line
        for line in own_printer.read("colour").splitlines()
        if not (jam_row in line and line.split("|")[0].endswith(".2.1"))
    ]
    lines = [
        line.replace("|4x|1400", "|4x|1000") if ".25.3.5.1.2." in line else line for line in lines
    ]
    own_printer.write("colour", "\n".join(lines) + "\n")
    second = await collector.collect()
    assert second.reachable, second.reason
    assert "JAM" not in codes(second)
    assert "TONER-OUT-CYAN" in codes(second)


async def test_a_poll_is_bounded_in_time_even_when_the_device_is_silent() -> None:
    # A budget shorter than the retries would take: the poll ends at the budget.
    target = SnmpTarget(host="127.0.0.1", port=9, community="public", timeout_s=5, budget_s=0.5)
    reading = await poll(target)
    assert not reading.reachable
    assert reading.reason == "no complete answer within 0.5 s"


async def test_the_agent_on_the_mfp_reports_its_printer_through_the_real_profile(
    own_printer: SnmpSimulator, tmp_path: Path
) -> None:
    from agent.config import load_agent_settings
    from agent.health.collectors import collect_all, status_of
    from agent.health.profiles import ProfileOptions, create_profile

    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\ndevice_id = "mfp-0042"\nprofile = "mfp"\n'
        f'[agent.snmp]\nport = {own_printer.port}\nsnmp_community = "colour"\n'
        "snmp_timeout_s = 0.3\nsnmp_retries = 0\n"
    )
    settings = load_agent_settings(config, environ={})
    options = ProfileOptions(device_id=settings.device_id, targets=settings.snmp)
    profile = create_profile(settings.profile, options, simulate=settings.simulate)
    reading = await collect_all([profile], timeout_s=settings.collector_timeout_s)
    assert reading.metrics["mfp.toner_cyan_percent"] == 0.0
    assert status_of(reading.faults) == "fault"
    assert profile.inventory["serial"] == "COLOR-0042"  # type: ignore[attr-defined]
    # The printer engine stops answering: the agent stays, and says so as a fault.
    own_printer.stop()
    silent = await collect_all([profile], timeout_s=settings.collector_timeout_s)
    assert silent.metrics == {}
    assert [f["code"] for f in silent.faults] == ["SNMP-UNREACHABLE"]
    assert "127.0.0.1" in silent.faults[0]["message"]
    assert "colour" not in silent.faults[0]["message"]
    profile.collector.close()  # type: ignore[attr-defined]


async def test_a_real_agent_publishes_its_printer_s_health(
    own_printer: SnmpSimulator, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """End to end: `fieldlink agent run` with profile mfp reads snmpsim and publishes over MQTT."""
    device = "mfp-snmp-e2e"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\ndevice_id = "{device}"\nbroker_url = "{mosquitto.url}"\ninterval_s = 1\n'
        f'state_dir = "{tmp_path / "state"}"\nprofile = "mfp"\n'
        f'[agent.snmp]\nport = {own_printer.port}\nsnmp_community = "colour"\n'
        "snmp_timeout_s = 0.3\nsnmp_retries = 0\n"
    )
    log_path = tmp_path / "agent.log"
    seen: list[HealthSample] = []

    async def until(predicate: Callable[[HealthSample], bool], within: float) -> HealthSample:
        async with asyncio.timeout(within):
            async for message in client.messages:
                sample = parse_message(HealthSample, bytes(message.payload))
                seen.append(sample)
                if predicate(sample):
                    return sample
        raise AssertionError("no such sample")

    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topics.telemetry(device), qos=1)
        process = start_agent_run(config, log_path)
        try:
            sample = await until(lambda s: "mfp.toner_cyan_percent" in s.metrics, 30)
            assert sample.status == "fault"
            assert sample.metrics["mfp.pages_total"] == 98765
            assert "cpu_percent" in sample.metrics
            assert {f.code for f in sample.faults} >= {"JAM", "TONER-OUT-CYAN"}
            own_printer.stop()
            silent = await until(lambda s: "mfp.toner_cyan_percent" not in s.metrics, 30)
            assert [f.code for f in silent.faults] == ["SNMP-UNREACHABLE"]
            assert "cpu_percent" in silent.metrics
        finally:
            await asyncio.to_thread(process.stop)
    assert "colour" not in log_path.read_text()


async def test_collectors_sharing_one_engine_poll_at_once_and_a_silent_one_spares_the_rest(
    printers: SnmpSimulator, own_printer: SnmpSimulator
) -> None:
    from agent.health.collectors.snmp import new_engine

    engine = new_engine()
    try:
        mono = PrinterMibCollector(v2c(printers, "mono"), name="mfp-a", engine=engine)
        colour = PrinterMibCollector(v2c(printers, "colour"), name="mfp-b", engine=engine)
        leaving = PrinterMibCollector(
            v2c(own_printer, "colour", timeout_s=0.3, retries=0), name="mfp-c", engine=engine
        )
        readings = await asyncio.gather(mono.collect(), colour.collect(), leaving.collect())
        assert [r.inventory.get("serial") for r in readings] == [
            "MONO-0001",
            "COLOR-0042",
            "COLOR-0042",
        ]
        own_printer.stop()
        for _ in range(2):
            readings = await asyncio.gather(mono.collect(), colour.collect(), leaving.collect())
            assert [r.reachable for r in readings] == [True, True, False]
        # Closing one collector leaves the shared engine to the others.
        leaving.close()
        assert (await mono.collect()).reachable
    finally:
        engine.close_dispatcher()


async def test_a_table_that_grows_between_polls_is_read_whole_in_few_requests(
    own_printer: SnmpSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The collector sizes its requests by the rows of the last poll; 40 more alerts
    # (paper out in tray 7, printer 2) must still all be read, and in full answers.
    requests: list[int] = []
    real_bulk = PrinterMibCollector._bulk

    async def counted(self: PrinterMibCollector, *args: object) -> object:
        requests.append(1)
        return await real_bulk(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PrinterMibCollector, "_bulk", counted)
    async with PrinterMibCollector(v2c(own_printer, "colour")) as collector:
        first = await collector.collect()
        assert first.reachable, first.reason
        requests.clear()
        again = await collector.collect()
        assert again.reachable, again.reason
        steady = len(requests)
        lines = own_printer.read("colour").splitlines()
        for row in range(100, 140):
            for column, tag, value in (
                (2, 2, 4), (3, 2, 4), (4, 2, 8), (5, 2, 7), (6, 2, -1), (7, 2, 803),
                (8, 4, f"Tray 7 empty ({row})"), (9, 67, 1000),
            ):  # fmt: skip
                lines.append(f"1.3.6.1.2.1.43.18.1.1.{column}.2.{row}|{tag}|{value}")
        lines.sort(key=lambda line: tuple(int(p) for p in line.split("|")[0].split(".")))
        own_printer.write("colour", "\n".join(lines) + "\n")
        requests.clear()
        grown = await collector.collect()
    assert grown.reachable, grown.reason
    paper_out = next(f for f in grown.faults if f["code"] == "PAPER-OUT-TRAY7")
    assert all(f"Tray 7 empty ({row})" in paper_out["message"] for row in (100, 139))
    # 46 alert rows of 6 columns: about 276 values, at about 64 an answer.
    assert len(requests) <= steady + 6, (steady, len(requests))


async def test_static_columns_are_read_with_the_identity_or_when_a_table_changes(
    own_printer: SnmpSimulator,
) -> None:
    # Supply types, capacities and colorants are read at the first poll only; levels
    # every poll. A supply fitted between two polls (a new row) is read whole at once.
    async with PrinterMibCollector(v2c(own_printer, "colour")) as collector:
        first = await collector.collect()
        assert first.reachable, first.reason
        assert collector.static_reads == 1
        assert first.metrics["mfp.toner_black_percent"] == 50.0
        assert first.metrics["mfp.supply_percent:opc_cyan"] == 70.0
        lines = own_printer.read("colour").splitlines()
        lines = [
            "1.3.6.1.2.1.43.11.1.1.9.2.1|2|5000" if line.startswith("1.3.6.1.2.1.43.11.1.1.9.2.1|")
            else line
            for line in lines
        ]  # fmt: skip
        own_printer.write("colour", "\n".join(lines) + "\n")
        levels = await collector.collect()
        assert levels.reachable, levels.reason
        assert collector.static_reads == 1  # same rows: the static columns kept
        assert levels.metrics["mfp.toner_black_percent"] == 25.0
        assert levels.metrics["mfp.supply_percent:opc_cyan"] == 70.0
        for column, tag, value in (
            (2, 2, 1), (3, 2, 0), (4, 2, 3), (5, 2, 15), (6, 4, "Fuser"), (7, 2, 19),
            (8, 2, 200), (9, 2, 50),
        ):  # fmt: skip
            lines.append(f"1.3.6.1.2.1.43.11.1.1.{column}.2.7|{tag}|{value}")
        lines.sort(key=lambda line: tuple(int(p) for p in line.split("|")[0].split(".")))
        own_printer.write("colour", "\n".join(lines) + "\n")
        fitted = await collector.collect()
        assert fitted.reachable, fitted.reason
        assert collector.static_reads == 2
        assert fitted.metrics["mfp.supply_percent:fuser"] == 25.0
        assert fitted.metrics["mfp.toner_black_percent"] == 25.0
        again = await collector.collect()
        assert collector.static_reads == 2
        assert again.metrics == fitted.metrics
