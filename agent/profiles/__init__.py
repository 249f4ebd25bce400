"""Device profiles (MFP, imaging console, server): plug-ins registered by name."""

from __future__ import annotations

from agent.profiles.base import ProfileOptions, create_profile, profile_names, register_profile
from agent.profiles.imaging import ImagingProfile
from agent.profiles.mfp import SnmpMfp
from agent.profiles.server import ServerProfile
from agent.profiles.simulated import SimulatedHost, SimulatedImaging, SimulatedMfp, SimulatedServer

register_profile("mfp", SimulatedMfp, simulated=True)
register_profile("mfp", SnmpMfp, simulated=False)
register_profile("imaging", SimulatedImaging, simulated=True)
register_profile("server", SimulatedServer, simulated=True)
register_profile("imaging", ImagingProfile, simulated=False)
register_profile("server", ServerProfile, simulated=False)

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
