"""How each value of the agent's settings is read, from TOML or from an environment string.

One parser per kind of value (:mod:`agent.config` maps each key to one); each
raises ``ValueError`` with a message that never echoes the value, which
:func:`agent.config.load_agent_settings` turns into a one-line error naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from shared.broker_url import BrokerAddress
from shared.errors import ConfigError
from shared.ids import is_device_id

#: Schemes a ``tunnel_proxy`` URL may use.
PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    msg = "must be true or false"
    raise ValueError(msg)


def parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        msg = "must be an integer"
        raise ValueError(msg)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    msg = "must be an integer"
    raise ValueError(msg)


def parse_float(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            pass
    msg = "must be a number"
    raise ValueError(msg)


def parse_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    msg = "must be a string"
    raise ValueError(msg)


def parse_path(raw: Any) -> Path:
    if isinstance(raw, Path):
        return raw
    value = parse_str(raw)
    if not value:
        msg = "must not be empty"
        raise ValueError(msg)
    return Path(value).expanduser()


def optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(raw: Any) -> Any:
        return None if raw is None or raw == "" else parse(raw)

    return parse_optional


def positive(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_positive(raw: Any) -> Any:
        value = parse(raw)
        if value <= 0:
            msg = "must be greater than 0"
            raise ValueError(msg)
        return value

    return parse_positive


def non_negative(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_non_negative(raw: Any) -> Any:
        value = parse(raw)
        if value < 0:
            msg = "must be 0 or more"
            raise ValueError(msg)
        return value

    return parse_non_negative


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse_choice(raw: Any) -> str:
        value = parse_str(raw).strip().lower()
        if value not in choices:
            msg = f"must be one of {', '.join(choices)}"
            raise ValueError(msg)
        return value

    return parse_choice


def parse_device_id(raw: Any) -> str:
    value = parse_str(raw)
    if not is_device_id(value):
        msg = "must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit"
        raise ValueError(msg)
    return value


def parse_table(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        # From the environment: a JSON object.
        try:
            raw = json.loads(raw)
        except ValueError:
            msg = "must be a JSON object"
            raise ValueError(msg) from None
    if not isinstance(raw, Mapping):
        msg = "must be a table"
        raise ValueError(msg)
    return dict(raw)


def parse_table_list(raw: Any) -> tuple[dict[str, Any], ...]:
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
    return tuple(dict(t) for t in raw)


def parse_str_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        # From the environment: comma-separated.
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
        msg = "must be a list of strings"
        raise ValueError(msg)
    return tuple(raw)


def parse_proxy(raw: Any) -> str:
    value = parse_str(raw).strip()
    if value.lower() in ("env", "none"):
        return value.lower()
    parts = urlsplit(value)
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
        msg = "must be env, none, or a proxy URL (http://host:port)"
        raise ValueError(msg)
    return value


def parse_broker_url(raw: Any) -> str:
    value = parse_str(raw).strip()
    BrokerAddress.parse(value)
    return value


def parse_snmp(raw: Any) -> dict[str, Any]:
    # Checked whole (keys, versions, key lengths) when loaded; pysnmp is not imported here.
    from agent.health.collectors.snmp_target import SnmpTarget

    table = parse_table(raw)
    if not table:
        return table  # no SNMP target: the real mfp profile refuses to start without one
    try:
        SnmpTarget.from_config(table, "")
    except ConfigError as exc:
        raise ValueError(str(exc).strip()) from None
    return table
