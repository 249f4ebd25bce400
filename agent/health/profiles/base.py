"""The device-profile plug-in interface: what an MFP, an imaging console or a server adds.

A profile is a :class:`~agent.health.collectors.base.Collector` whose metric names
carry its prefix (``mfp.``, ``imaging.``, ``server.``) and which reports the
device's faults. Each profile name has a real implementation (SNMP Printer-MIB
for an MFP, DICOM C-ECHO for an imaging console, the host's tools for a server)
and a simulated one for demos, tests and load tests, both registered in
:mod:`agent.health.registry`. Both are built from the same
:class:`ProfileOptions`, so switching ``simulate`` changes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ProfileOptions:
    """What a profile is built from.

    Attributes:
        device_id: The device the profile observes.
        seed: Seed of a simulated profile's random numbers (``None``: unpredictable).
        targets: Profile-specific settings of a real profile (SNMP host and
            community, DICOM peers' AE titles...).
    """

    device_id: str
    seed: int | None = None
    targets: Mapping[str, Any] = field(default_factory=dict)
