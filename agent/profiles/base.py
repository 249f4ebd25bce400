"""The device-profile plug-in interface: what an MFP, an imaging console or a server adds.

A profile is a :class:`~agent.collectors.base.Collector` whose metric names
carry its prefix (``mfp.``, ``imaging.``, ``server.``) and which reports the
device's faults. Each profile name has a real implementation (SNMP Printer-MIB
for an MFP, DICOM C-ECHO for an imaging console; later issues) and a simulated
one for demos, tests and load tests. Both are built from the same
:class:`ProfileOptions`, so switching ``simulate`` changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.collectors.base import Collector
from shared.errors import ConfigError


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


ProfileFactory = Callable[[ProfileOptions], Collector]
_REAL: dict[str, ProfileFactory] = {}
_SIMULATED: dict[str, ProfileFactory] = {}


def register_profile(name: str, factory: ProfileFactory, *, simulated: bool) -> None:
    """Register the real or the simulated implementation of profile ``name``."""
    (_SIMULATED if simulated else _REAL)[name] = factory


def create_profile(name: str, options: ProfileOptions, *, simulate: bool) -> Collector:
    """Build profile ``name``, simulated or real.

    Raises:
        ConfigError: when no such profile exists, or it has no real implementation yet.
    """
    registry = _SIMULATED if simulate else _REAL
    factory = registry.get(name)
    if factory is None:
        if not simulate and name in _SIMULATED:
            msg = (
                f"[agent] profile: {name!r} has no real collector in this version; "
                "set simulate = true to run it on simulated values"
            )
        else:
            msg = f"[agent] profile: unknown profile {name!r}"
        raise ConfigError(msg)
    return factory(options)


def profile_names(*, simulated: bool) -> list[str]:
    """The names of the registered real or simulated profiles."""
    return sorted(_SIMULATED if simulated else _REAL)
