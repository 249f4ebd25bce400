"""Device profiles (MFP, imaging console, server): plug-ins of :mod:`agent.health.registry`."""

from __future__ import annotations

from agent.health.profiles.base import ProfileOptions
from agent.health.profiles.imaging import ImagingProfile
from agent.health.profiles.mfp import SnmpMfp
from agent.health.profiles.server import ServerProfile
from agent.health.profiles.simulated import (
    SimulatedHost,
    SimulatedImaging,
    SimulatedMfp,
    SimulatedServer,
)
from agent.health.registry import create_profile, profile_names, register_profile

__all__ = [
    "ImagingProfile",
    "ProfileOptions",
    "ServerProfile",
    "SimulatedHost",
    "SimulatedImaging",
    "SimulatedMfp",
    "SimulatedServer",
    "SnmpMfp",
    "create_profile",
    "profile_names",
    "register_profile",
]
