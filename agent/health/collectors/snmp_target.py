"""The SNMP device a collector polls and its credentials (``[agent.snmp]``, ``[[agent.devices]]``).

:class:`SnmpTarget` checks itself when made and never shows a secret in ``repr``;
:meth:`SnmpTarget.from_config` reads it from a configuration table. No pysnmp here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from shared.errors import ConfigError

SnmpVersion = Literal["2c", "3"]
AUTH_PROTOCOLS: Final = ("sha", "sha256", "sha512")
PRIV_PROTOCOLS: Final = ("aes", "aes256")
#: Keys of an SNMP target in the agent's configuration (``[agent.snmp]``, ``[[agent.devices]]``).
TARGET_KEYS: Final = (
    "host",
    "port",
    "snmp_version",
    "snmp_community",
    "snmp_user",
    "snmp_auth_protocol",
    "snmp_auth_key",
    "snmp_priv_protocol",
    "snmp_priv_key",
    "snmp_context",
    "snmp_timeout_s",
    "snmp_retries",
    "expected_serial",
)


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    """One SNMP agent to poll, and how to authenticate to it.

    Secrets (community, keys) are left out of ``repr`` so they are never logged.

    Attributes:
        host: Address or name of the device.
        port: UDP port (161).
        version: ``2c`` (community) or ``3`` (USM user, authPriv).
        community: SNMPv2c community.
        user: SNMPv3 USM user name.
        auth_protocol: ``sha``, ``sha256`` or ``sha512`` (HMAC-SHA-1/-256/-512).
        auth_key: SNMPv3 authentication passphrase.
        priv_protocol: ``aes`` (AES-128) or ``aes256`` (AES-256, Reeder key extension).
        priv_key: SNMPv3 privacy passphrase.
        context: SNMPv3 context name ("" for most printers).
        timeout_s: Seconds to wait for one response before a retry.
        retries: Retries of one request.
        budget_s: Time bound of a whole poll.
        expected_serial: The serial registered for this device, if known.
    """

    host: str
    port: int = 161
    version: SnmpVersion = "2c"
    community: str = field(default="", repr=False)
    user: str = ""
    auth_protocol: str = "sha256"
    auth_key: str = field(default="", repr=False)
    priv_protocol: str = "aes"
    priv_key: str = field(default="", repr=False)
    context: str = ""
    timeout_s: float = 1.0
    retries: int = 1
    budget_s: float = 4.0
    expected_serial: str | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if not self.host or any(c.isspace() for c in self.host):
            return "host: must be a host name or address"
        if not 0 < self.port < 65536:
            return "port: must be 1-65535"
        if self.version not in ("2c", "3"):
            return "snmp_version: must be 2c or 3"
        if self.version == "2c" and not self.community:
            return "snmp_community: required with snmp_version 2c"
        if self.version == "3":
            if not self.user:
                return "snmp_user: required with snmp_version 3"
            if self.auth_protocol not in AUTH_PROTOCOLS:
                return f"snmp_auth_protocol: must be one of {', '.join(AUTH_PROTOCOLS)}"
            if self.priv_protocol not in PRIV_PROTOCOLS:
                return f"snmp_priv_protocol: must be one of {', '.join(PRIV_PROTOCOLS)}"
            # RFC 3414: a passphrase shorter than 8 characters is refused by agents.
            if len(self.auth_key) < 8:
                return "snmp_auth_key: at least 8 characters (authPriv)"
            if len(self.priv_key) < 8:
                return "snmp_priv_key: at least 8 characters (authPriv)"
        if self.timeout_s <= 0 or self.budget_s <= 0 or self.retries < 0:
            return "snmp_timeout_s, snmp_retries: must be positive"
        return None

    @classmethod
    def from_config(
        cls,
        table: Mapping[str, Any],
        where: str = "[agent.snmp]",
        *,
        other_keys: Collection[str] = (),
    ) -> SnmpTarget:
        """A target from a configuration table (``[agent.snmp]`` or one ``[[agent.devices]]``).

        ``host`` defaults to 127.0.0.1 (the agent on the MFP's own controller).

        Args:
            table: The table's keys (:data:`TARGET_KEYS`).
            where: How the table is named in error messages.
            other_keys: Keys the caller reads itself (``id``, ``profile``); any
                other unknown key is an error (a misspelt ``snmp_comunity``).

        Raises:
            ConfigError: naming the bad key, never echoing a value.
        """
        for key in table:
            if key not in TARGET_KEYS and key not in other_keys:
                msg = f"{where} {key}: unknown key (known: {', '.join(TARGET_KEYS)})"
                raise ConfigError(msg)

        def text(key: str, default: str = "") -> str:
            value = table.get(key, default)
            if not isinstance(value, str):
                msg = f"{where} {key}: must be a string"
                raise ConfigError(msg)
            return value

        def number(key: str, default: float) -> float:
            value = table.get(key, default)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = None
            if not isinstance(value, int | float) or isinstance(value, bool):
                msg = f"{where} {key}: must be a number"
                raise ConfigError(msg)
            return float(value)

        port = number("port", 161)
        retries = number("snmp_retries", 1)
        if port != int(port) or retries != int(retries):
            msg = f"{where} port, snmp_retries: must be integers"
            raise ConfigError(msg)
        expected = table.get("expected_serial")
        try:
            return cls(
                host=text("host", "127.0.0.1").strip(),
                port=int(port),
                version=text("snmp_version", "2c").strip().lower(),  # type: ignore[arg-type]
                community=text("snmp_community"),
                user=text("snmp_user"),
                auth_protocol=text("snmp_auth_protocol", "sha256").strip().lower(),
                auth_key=text("snmp_auth_key"),
                priv_protocol=text("snmp_priv_protocol", "aes").strip().lower(),
                priv_key=text("snmp_priv_key"),
                context=text("snmp_context"),
                timeout_s=number("snmp_timeout_s", 1.0),
                retries=int(retries),
                expected_serial=text("expected_serial") if expected is not None else None,
            )
        except ValueError as exc:
            msg = f"{where} {exc}"
            raise ConfigError(msg) from None
