"""The real ``mfp`` profile: the agent on an MFP's own controller reads it over SNMP.

The printer engine of an MFP answers SNMP on the controller it shares with the
agent, so ``[agent.snmp]`` names it (host 127.0.0.1 by default; see
:class:`agent.health.collectors.snmp_target.SnmpTarget` for the keys)::

    [agent]
    profile = "mfp"

    [agent.snmp]
    snmp_version = "3"
    snmp_user = "fieldlink"
    snmp_auth_protocol = "sha256"
    snmp_auth_key = "..."
    snmp_priv_protocol = "aes"
    snmp_priv_key = "..."

The metrics, faults and inventory are those of
:class:`agent.health.collectors.snmp.PrinterMibCollector`. The agent itself is
running, so a printer engine that stops answering is not an offline device but
the fault ``SNMP-UNREACHABLE`` (error), with the reason in its message; it
clears with the next answer.
"""

from __future__ import annotations

from agent.health.collectors.base import Reading
from agent.health.collectors.snmp import PrinterMibCollector, SnmpTarget
from agent.health.profiles.base import ProfileOptions
from shared.errors import ConfigError

UNREACHABLE_CODE = "SNMP-UNREACHABLE"


class SnmpMfp:
    """An MFP's Printer-MIB, read by the agent running on it.

    Attributes:
        inventory: The identity the last answer gave (serial, model, firmware, sysDescr).
    """

    name = "mfp"

    def __init__(self, options: ProfileOptions) -> None:
        if not options.targets:
            msg = (
                "[agent] profile: 'mfp' reads the printer over SNMP: add [agent.snmp] "
                "(host, snmp_version, snmp_community or snmp_user...), "
                "or set simulate = true"
            )
            raise ConfigError(msg)
        self.target = SnmpTarget.from_config(options.targets)
        self.collector = PrinterMibCollector(self.target, name=self.name)
        self.inventory: dict[str, str] = {}

    async def collect(self) -> Reading:
        """Poll the printer once (bounded by the target's budget; never raises for it)."""
        reading = await self.collector.collect()
        if not reading.reachable:
            message = (
                f"the printer at {self.target.host}:{self.target.port} does not answer SNMP: "
                f"{reading.reason}"
            )
            return Reading(
                faults=[{"code": UNREACHABLE_CODE, "severity": "error", "message": message}]
            )
        self.inventory = dict(reading.inventory)
        return Reading(metrics=dict(reading.metrics), faults=list(reading.faults))
