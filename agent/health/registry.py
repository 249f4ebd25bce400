"""The health plug-ins: every collector and device profile, registered by name in one place.

A collector (``system``) is built from nothing; a profile (``mfp``, ``imaging``,
``server``) is built from :class:`~agent.health.profiles.base.ProfileOptions`
and has a real implementation (SNMP Printer-MIB, DICOM C-ECHO, the host's own
tools) and a simulated one for demos, tests and load tests. Both kinds are
registered explicitly, as telegraf registers its inputs, in
:func:`_register_builtins` (on the first lookup); a third party registers its own with
:func:`register_collector` or :func:`register_profile`. Importing this module
imports no profile's heavy library (pysnmp, pynetdicom): each profile loads its
own when it first runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.errors import ConfigError

if TYPE_CHECKING:
    from agent.health.collectors.base import Collector
    from agent.health.profiles.base import ProfileOptions

CollectorFactory = Callable[[], "Collector"]
ProfileFactory = Callable[["ProfileOptions"], "Collector"]

_COLLECTORS: dict[str, CollectorFactory] = {}
_builtins_registered = False
_REAL: dict[str, ProfileFactory] = {}
_SIMULATED: dict[str, ProfileFactory] = {}


def register_collector(name: str, factory: CollectorFactory) -> None:
    """Register a collector under ``name`` (explicitly, as telegraf inputs do)."""
    _COLLECTORS[name] = factory


def create_collector(name: str) -> Collector:
    """A new collector of the registered ``name``.

    Raises:
        KeyError: when nothing is registered under ``name``.
    """
    _register_builtins()
    return _COLLECTORS[name]()


def registered_collectors() -> list[str]:
    """The names of every registered collector."""
    _register_builtins()
    return sorted(_COLLECTORS)


def register_profile(name: str, factory: ProfileFactory, *, simulated: bool) -> None:
    """Register the real or the simulated implementation of profile ``name``."""
    (_SIMULATED if simulated else _REAL)[name] = factory


def create_profile(name: str, options: ProfileOptions, *, simulate: bool) -> Collector:
    """Build profile ``name``, simulated or real.

    Raises:
        ConfigError: when no such profile exists, or it has no real implementation.
    """
    _register_builtins()
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
    _register_builtins()
    return sorted(_SIMULATED if simulated else _REAL)


def _register_builtins() -> None:
    # On first use rather than at import: the built-in plug-ins import the packages
    # that re-export this module's functions, so an import-time registration is circular.
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    from agent.health.collectors.system import SystemCollector
    from agent.health.profiles.imaging import ImagingProfile
    from agent.health.profiles.mfp import SnmpMfp
    from agent.health.profiles.server import ServerProfile
    from agent.health.profiles.simulated import SimulatedImaging, SimulatedMfp, SimulatedServer

    register_collector("system", SystemCollector)
    register_profile("mfp", SnmpMfp, simulated=False)
    register_profile("mfp", SimulatedMfp, simulated=True)
    register_profile("imaging", ImagingProfile, simulated=False)
    register_profile("imaging", SimulatedImaging, simulated=True)
    register_profile("server", ServerProfile, simulated=False)
    register_profile("server", SimulatedServer, simulated=True)
