"""``[[agent.devices]]``: the equipment a site gateway's agent watches over the network.

Each table is a registered device bound to this agent (``fieldlink device add ...
--via THIS_AGENT``) and how to reach it::

    [[agent.devices]]
    id = "mfp-3f-east"          # the registered device id
    profile = "mfp"             # the only profile watched over the network (SNMP Printer-MIB)
    host = "192.0.2.10"
    port = 161                  # default 161
    snmp_version = "2c"         # "2c" (snmp_community) or "3" (snmp_user,
    snmp_community = "public"   #   snmp_auth_protocol sha|sha256|sha512, snmp_auth_key,
                                #   snmp_priv_protocol aes|aes256, snmp_priv_key)
    expected_serial = "XK-0042" # optional: a poll that reads another serial raises SERIAL-MISMATCH

From the environment: ``FIELDLINK_DEVICES`` as a JSON array of objects. The
tables are checked whole when the configuration is loaded; an error names the
table (``[[agent.devices]] #2``) and the key, never a value: communities and
keys are secrets, left out of every ``repr`` and log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from shared.errors import ConfigError, InvalidDeviceId
from shared.ids import check_device_id

if TYPE_CHECKING:
    from agent.health.collectors.snmp_target import SnmpTarget

#: The profiles a gateway can watch over the network.
WATCHED_PROFILES: Final = ("mfp",)
#: The keys of a table besides the SNMP target's.
OWN_KEYS: Final = ("id", "profile", "web_port", "https_port")
#: A remote session's services on a watched device, and their default ports.
WEB_PORTS: Final = {"web": ("web_port", 80), "https": ("https_port", 443)}


@dataclass(frozen=True)
class WatchedDevice:
    """One device a gateway watches: its registered id, profile, and SNMP target.

    The target's ``repr`` leaves its secrets out.
    """

    id: str
    profile: str
    target: SnmpTarget = field(repr=False)
    #: Its web page's ports, for remote sessions (``web_port``, ``https_port``: 80, 443).
    web_ports: Mapping[str, int] = field(default_factory=lambda: {"web": 80, "https": 443})


def parse_devices(raw: Any) -> tuple[dict[str, Any], ...]:
    """The ``devices`` key's tables, each checked (:func:`watched_devices`); raises
    ``ValueError`` naming the table and key, never a value."""
    if isinstance(raw, str):
        # From the environment: a JSON array of objects.
        try:
            raw = json.loads(raw)
        except ValueError:
            msg = "must be a JSON array of objects"
            raise ValueError(msg) from None
    if not isinstance(raw, list | tuple) or not all(isinstance(t, Mapping) for t in raw):
        msg = "must be an array of tables"
        raise ValueError(msg)
    tables = tuple(dict(t) for t in raw)
    try:
        watched_devices(tables)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return tables


def watched_devices(tables: Sequence[Mapping[str, Any]]) -> list[WatchedDevice]:
    """The watched devices the tables describe.

    Raises:
        ConfigError: naming the table and key (a missing or bad id, a duplicate id,
            an unknown profile, a bad SNMP key), never a value.
    """
    from agent.health.collectors.snmp_target import SnmpTarget

    devices: list[WatchedDevice] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        where = f"#{number}"
        device_id = table.get("id")
        if not isinstance(device_id, str):
            msg = f"{where} id: required (the registered device id)"
            raise ConfigError(msg)
        try:
            check_device_id(device_id)
        except InvalidDeviceId:
            msg = f"{where} id: not a device id (1-63 of a-z, 0-9 and '-')"
            raise ConfigError(msg) from None
        if device_id in seen:
            msg = f"{where} id: {device_id} is listed twice"
            raise ConfigError(msg)
        seen.add(device_id)
        profile = table.get("profile", "mfp")
        if profile not in WATCHED_PROFILES:
            msg = f"{where} profile: must be one of {', '.join(WATCHED_PROFILES)}"
            raise ConfigError(msg)
        target = SnmpTarget.from_config(table, f"{where} ({device_id})", other_keys=OWN_KEYS)
        ports: dict[str, int] = {}
        for service, (key, default) in WEB_PORTS.items():
            port = table.get(key, default)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                msg = f"{where} ({device_id}) {key}: must be a port number (1-65535)"
                raise ConfigError(msg)
            ports[service] = port
        devices.append(WatchedDevice(device_id, profile, target, ports))
    return devices


def check_not_self(tables: Sequence[Mapping[str, Any]], device_id: str) -> None:
    """A gateway cannot watch itself.

    Raises:
        ConfigError: when a table's id is the agent's own device id.
    """
    for number, table in enumerate(tables, start=1):
        if table.get("id") == device_id:
            msg = f"#{number} id: the agent's own device_id cannot be watched over the network"
            raise ConfigError(msg)
