"""The SNMP target's configuration and the Printer-MIB interpretation, without a device."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_agent_settings
from agent.health.collectors.printer_mib import (
    ALERT_CODE,
    ALERT_DESCR,
    ALERT_GROUP,
    ALERT_GROUP_INDEX,
    ALERT_SEVERITY,
    HR_DEVICE_PRINTER,
    INPUT_LEVEL,
    INPUT_MAX,
    SUPPLY_CLASS,
    SUPPLY_COLORANT,
    SUPPLY_LEVEL,
    SUPPLY_MAX,
    SUPPLY_TYPE,
)
from agent.health.collectors.printer_reading import interpret
from agent.health.collectors.snmp_target import SnmpTarget
from shared.errors import ConfigError

SECRET = "s3cr3t-community-value"


def supplies(*rows: tuple[int, int, int, int, int]) -> dict[int, dict[tuple[int, ...], Any]]:
    """(colorant index, class, type, max, level) per supply of device 1."""
    table: dict[int, dict[tuple[int, ...], Any]] = {
        c: {} for c in (SUPPLY_COLORANT, SUPPLY_CLASS, SUPPLY_TYPE, SUPPLY_MAX, SUPPLY_LEVEL)
    }
    for i, (colorant, klass, kind, maximum, level) in enumerate(rows, 1):
        table[SUPPLY_COLORANT][(1, i)] = colorant
        table[SUPPLY_CLASS][(1, i)] = klass
        table[SUPPLY_TYPE][(1, i)] = kind
        table[SUPPLY_MAX][(1, i)] = maximum
        table[SUPPLY_LEVEL][(1, i)] = level
    return table


def colorants(*names: str | bytes) -> dict[tuple[int, ...], Any]:
    return {(1, i): n.encode() if isinstance(n, str) else n for i, n in enumerate(names, 1)}


# --- configuration ---


def test_a_v2c_target_on_the_controller_itself_needs_only_its_community() -> None:
    target = SnmpTarget.from_config({"snmp_community": SECRET})
    assert (target.host, target.port, target.version) == ("127.0.0.1", 161, "2c")
    assert SECRET not in repr(target)


def test_a_v3_target_keeps_its_keys_out_of_repr() -> None:
    target = SnmpTarget.from_config(
        {
            "host": "192.0.2.10",
            "snmp_version": "3",
            "snmp_user": "fl",
            "snmp_auth_protocol": "SHA512",
            "snmp_auth_key": "auth-" + SECRET,
            "snmp_priv_protocol": "aes256",
            "snmp_priv_key": "priv-" + SECRET,
        }
    )
    assert (target.auth_protocol, target.priv_protocol) == ("sha512", "aes256")
    assert SECRET not in repr(target)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "snmp_community"),
        ({"snmp_community": SECRET, "snmp_version": "1"}, "snmp_version"),
        ({"snmp_community": SECRET, "port": 70000}, "port"),
        ({"snmp_community": SECRET, "port": "x"}, "port"),
        ({"snmp_community": SECRET, "host": "a b"}, "host"),
        ({"snmp_comunity": SECRET}, "snmp_comunity"),
        ({"snmp_version": "3", "snmp_auth_key": SECRET, "snmp_priv_key": SECRET}, "snmp_user"),
        (
            {
                "snmp_version": "3",
                "snmp_user": "u",
                "snmp_auth_key": "short",
                "snmp_priv_key": SECRET,
            },
            "snmp_auth_key",
        ),
        (
            {
                "snmp_version": "3",
                "snmp_user": "u",
                "snmp_auth_protocol": "md5",
                "snmp_auth_key": SECRET,
                "snmp_priv_key": SECRET,
            },
            "snmp_auth_protocol",
        ),
        (
            {
                "snmp_version": "3",
                "snmp_user": "u",
                "snmp_auth_key": SECRET,
                "snmp_priv_protocol": "des",
                "snmp_priv_key": SECRET,
            },
            "snmp_priv_protocol",
        ),
        ({"snmp_community": 161}, "snmp_community"),
    ],
)
def test_a_bad_target_is_refused_naming_the_key_never_the_secret(
    table: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)) as caught:
        SnmpTarget.from_config(table)
    assert SECRET not in str(caught.value)


def test_the_gateway_may_pass_keys_it_reads_itself() -> None:
    table = {"id": "mfp-3f-east", "profile": "mfp", "host": "192.0.2.10", "snmp_community": "p"}
    with pytest.raises(ConfigError, match="id: unknown key"):
        SnmpTarget.from_config(table)
    target = SnmpTarget.from_config(table, "[[agent.devices]]", other_keys=("id", "profile"))
    assert target.host == "192.0.2.10"


def test_agent_toml_gives_the_snmp_target_and_a_bad_one_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\ndevice_id = "mfp-0042"\nprofile = "mfp"\n'
        f'[agent.snmp]\nhost = "127.0.0.1"\nsnmp_community = "{SECRET}"\n'
    )
    settings = load_agent_settings(path, environ={})
    assert settings.snmp["snmp_community"] == SECRET
    assert SECRET not in repr(settings)
    path.write_text(
        '[agent]\ndevice_id = "mfp-0042"\n'
        f'[agent.snmp]\nsnmp_version = "3"\nsnmp_user = "u"\nsnmp_auth_key = "{SECRET}"\n'
    )
    with pytest.raises(ConfigError, match=r"\[agent\] snmp: snmp_priv_key") as caught:
        load_agent_settings(path, environ={})
    assert SECRET not in str(caught.value)
    from_env = load_agent_settings(
        None, environ={"FIELDLINK_DEVICE_ID": "mfp-1", "FIELDLINK_SNMP": '{"snmp_community": "c"}'}
    )
    assert from_env.snmp == {"snmp_community": "c"}


# --- interpretation ---


def test_special_levels_are_never_a_percentage() -> None:
    reading = interpret(
        {
            "supplies": supplies(
                (1, 3, 21, 100, -1),
                (2, 3, 21, 100, -2),
                (3, 3, 21, 100, -3),
                (4, 3, 21, -2, 50),
                (0, 3, 9, 0, 0),
                (0, 3, 15, -1, 10),
            ),
            "colorant": colorants("black", "cyan", "magenta", "yellow"),
        }
    )
    assert reading.metrics == {}
    assert reading.unknown_levels == {
        "mfp.toner_black_percent": "unrestricted",
        "mfp.toner_cyan_percent": "unknown",
        "mfp.toner_magenta_percent": "some_remaining",
        "mfp.toner_yellow_percent": "unknown",
        "mfp.supply_percent:opc": "unknown",
        "mfp.supply_percent:fuser": "unrestricted",
    }


def test_a_receptacle_reports_how_full_it_is_and_a_level_past_capacity_is_capped() -> None:
    reading = interpret(
        {"supplies": supplies((0, 4, 4, 200, 50), (1, 3, 3, 100, 250), (1, 3, 3, 100, 30))}
        | {"colorant": colorants("Black")}
    )
    assert reading.metrics == {
        "mfp.supply_percent:waste_toner": 75.0,
        "mfp.toner_black_percent": 100.0,
        # A second black toner keeps its own name.
        "mfp.toner_black_3_percent": 30.0,
    }


def test_error_state_bits_stand_in_when_the_alert_table_is_silent() -> None:
    tables = {
        "supplies": supplies((1, 3, 3, 100, 0), (2, 3, 3, 100, 5), (3, 3, 3, 100, 40)),
        "colorant": colorants("black", "cyan", "magenta"),
        "input": {INPUT_MAX: {(1, 1): 250, (1, 2): 250}, INPUT_LEVEL: {(1, 1): 100, (1, 2): 0}},
        # lowPaper, noPaper, lowToner, noToner, doorOpen, jammed, offline, serviceRequested
        "hr_error": {(1,): b"\xff\x00"},
    }
    faults = {f["code"]: f["severity"] for f in interpret(tables).faults}
    assert faults == {
        "JAM": "error",
        "COVER-OPEN": "error",
        "SERVICE-CALL": "critical",
        "TONER-OUT-BLACK": "error",
        "TONER-LOW-CYAN": "warning",
        "PAPER-OUT-TRAY2": "warning",
        "OFFLINE": "warning",
    }


def test_a_bit_the_tables_cannot_attribute_says_unknown() -> None:
    faults = {f["code"] for f in interpret({"hr_error": {(1,): b"\x50\x80"}}).faults}
    assert faults == {"TONER-OUT-UNKNOWN", "PAPER-OUT-UNKNOWN", "TRAY-MISSING-UNKNOWN"}


def test_alerts_map_to_stable_codes_and_events_are_not_faults() -> None:
    rows = [
        # severity, group, group index, code, description
        (3, 13, 1, 8, b"Jam at fuser exit"),
        (3, 13, 2, 8, b"Jam at duplex"),
        (3, 6, 1, 3, b"Front cover open"),
        (3, 11, 1, 13, b"Black empty"),
        (4, 11, 2, 12, b""),
        (4, 8, 2, 13, b"Tray 2 empty"),
        (3, 5, 1, 1004, b"Fuser thermistor"),
        (3, 10, 1, 1002, b"Fuser over temperature"),
        (4, 9, 1, 903, b"Output bin full"),
        (5, 6, 1, 4, b"Cover closed"),
        (4, 5, 1, 503, b"Power up"),
        (1, 5, 1, 8, b"a jam of severity other"),
        (3, 5, 1, b"8", b"a code that is not an integer"),
    ]
    alert: dict[int, dict[tuple[int, ...], Any]] = {
        c: {} for c in (ALERT_SEVERITY, ALERT_GROUP, ALERT_GROUP_INDEX, ALERT_CODE, ALERT_DESCR)
    }
    for i, (severity, group, group_index, code, text) in enumerate(rows, 1):
        alert[ALERT_SEVERITY][(1, i)] = severity
        alert[ALERT_GROUP][(1, i)] = group
        alert[ALERT_GROUP_INDEX][(1, i)] = group_index
        alert[ALERT_CODE][(1, i)] = code
        alert[ALERT_DESCR][(1, i)] = text
    reading = interpret(
        {
            "alert": alert,
            "supplies": supplies((1, 3, 21, 100, 0), (2, 3, 21, 100, 3)),
            "colorant": colorants("black", "cyan"),
        }
    )
    faults = {f["code"]: f for f in reading.faults}
    assert {code: f["severity"] for code, f in faults.items()} == {
        "JAM": "error",
        "COVER-OPEN": "error",
        "TONER-OUT-BLACK": "error",
        "TONER-LOW-CYAN": "warning",
        "PAPER-OUT-TRAY2": "warning",
        "SERVICE-CALL": "critical",
        "PRT-903": "warning",
    }
    # Two jams are one fault naming both places.
    assert "fuser exit" in faults["JAM"]["message"]
    assert "duplex" in faults["JAM"]["message"]
    assert "thermistor" in faults["SERVICE-CALL"]["message"]


def test_hostile_values_make_safe_names_and_bounded_messages() -> None:
    alert = {
        ALERT_SEVERITY: {(1, 1): 3},
        ALERT_GROUP: {(1, 1): 11},
        ALERT_GROUP_INDEX: {(1, 1): 1},
        ALERT_CODE: {(1, 1): 1101},
        ALERT_DESCR: {(1, 1): b"\x1b[2J" + b"A" * 100_000},
    }
    reading = interpret(
        {
            "supplies": supplies((1, 3, 3, 100, 10), (1, 3, 999, 100, 10)),
            "colorant": {(1, 1): "../../Etc/Passwd\n" * 50},
            "alert": alert,
            "hr_type": {(1,): HR_DEVICE_PRINTER},
            "hr_descr": {(1,): b"\xff\xfeModel\x00" + b"x" * 10_000},
            "serial": {(1,): 12345},
            "hr_error": {(1,): 7},
        }
    )
    for name in reading.metrics:
        assert re.fullmatch(r"mfp\.[a-z0-9_]+(:[a-z0-9_]+)?|mfp\.toner_[a-z0-9_]+_percent", name)
        assert len(name) <= 128
    for fault in reading.faults:
        assert len(fault["code"]) <= 64
        assert re.fullmatch(r"[A-Z0-9-]+", fault["code"])
        assert len(fault["message"]) <= 1024
        assert "\x1b" not in fault["message"]
    assert len(reading.inventory["model"]) <= 256
    assert "serial" not in reading.inventory


async def test_snmpv3_without_ciphers_says_so_instead_of_failing_silently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pysnmp.hlapi.v3arch.asyncio  # noqa: F401 - loads aes after what it imports
    from pysnmp.proto.secmod.rfc3826.priv import aes

    from agent.health.collectors.snmp import PrinterMibCollector

    # What pysnmp records when cryptography is missing or older than 47.
    monkeypatch.setattr(aes, "PysnmpCryptoError", True)
    target = SnmpTarget(
        host="127.0.0.1",
        port=9,
        version="3",
        user="u",
        auth_key="auth-key-1",
        priv_key="priv-key-1",
    )
    async with PrinterMibCollector(target) as collector:
        reading = await collector.collect()
    assert not reading.reachable
    assert reading.reason == "SNMPv3 privacy needs the cryptography package, 47 or later"


def test_columns_are_batched_by_last_polls_rows_and_merged_when_cheaper() -> None:
    from agent.health.collectors.snmp import COLUMN_GROUPS
    from agent.health.collectors.snmp_walk import batches as _batches

    columns = [column for _group, members in COLUMN_GROUPS for column in members]
    # First poll: nothing known, one batch of everything.
    assert _batches(columns, {}) == [columns]
    # Known rows: a batch per row count, and two small batches of close counts share a
    # GETBULK (2 values wasted cost less than a message); 18 columns of one row do not
    # take the input's repetitions (18 values wasted).
    rows = {oid: 1 for _key, _col, oid in columns}
    rows.update({c[2]: 2 for c in columns if c[0] == "input"})
    rows.update({c[2]: 3 for c in columns if c[0] == "marker"})
    batches = _batches(columns, rows)
    assert batches == [
        [c for c in columns if c[0] not in ("input", "marker")],
        # by rows: the input's (2) before the marker's (3)
        [c for c in columns if c[0] == "input"] + [c for c in columns if c[0] == "marker"],
    ]
    # A column not seen yet goes first, alone with the other unknown ones.
    new = ("extra", None, (1, 3, 6, 1, 9))
    assert _batches([*columns, new], rows)[0] == [new]


def test_static_columns_are_the_make_up_and_every_table_has_a_column_read_each_poll() -> None:
    from agent.health.collectors.printer_mib import (
        COLUMN_GROUPS,
        MARKER_LIFE_COUNT,
        ROWS_OF,
        STATIC_GROUPS,
        SUPPLY_LEVEL,
        SUPPLY_MAX,
        SUPPLY_TYPE,
    )
    from agent.health.collectors.snmp import _table_rows

    static = {c[:2] for g, m in COLUMN_GROUPS if g in STATIC_GROUPS for c in m}
    every = {c[:2] for g, m in COLUMN_GROUPS if g not in STATIC_GROUPS for c in m}
    assert ("supplies", SUPPLY_TYPE) in static
    assert ("supplies", SUPPLY_MAX) in static
    assert ("colorant", None) in static
    assert ("supplies", SUPPLY_LEVEL) in every
    assert ("marker", MARKER_LIFE_COUNT) in every
    assert {("serial", None), ("hr_error", None)} <= every
    assert not static & every
    # Each table with static columns has its every-poll column whose rows are watched.
    for key, col in ROWS_OF.items():
        assert (key, col) in every
        assert any(k == key for k, _c in static)
    # A new supply row changes the rows seen, a new level of the same rows does not.
    before = {"supplies": {SUPPLY_LEVEL: {(1, 1): 10, (1, 2): 20}}}
    levels = {"supplies": {SUPPLY_LEVEL: {(1, 1): 5, (1, 2): 20}}}
    fitted = {"supplies": {SUPPLY_LEVEL: {(1, 1): 5, (1, 2): 20, (1, 3): 50}}}
    assert _table_rows(before) == _table_rows(levels)
    assert _table_rows(before) != _table_rows(fitted)
