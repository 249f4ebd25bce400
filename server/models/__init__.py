"""The server's tables and API models; importing this registers every table."""

from server.models.device import (
    DEVICE_TYPES,
    Device,
    DeviceBase,
    DeviceCreate,
    DevicePublic,
    DevicesPublic,
)
from server.models.telemetry import Alert, AlertPublic, TelemetryRollup, TelemetrySample
from server.models.user import ROLES, ApiToken, User, UserPublic, role_at_least

__all__ = [
    "DEVICE_TYPES",
    "ROLES",
    "Alert",
    "AlertPublic",
    "ApiToken",
    "Device",
    "DeviceBase",
    "DeviceCreate",
    "DevicePublic",
    "DevicesPublic",
    "TelemetryRollup",
    "TelemetrySample",
    "User",
    "UserPublic",
    "role_at_least",
]
