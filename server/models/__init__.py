"""The server's tables and API models; importing this registers every table."""

from server.models.audit import (
    GENESIS_HASH,
    AuditEntriesPublic,
    AuditEntry,
    AuditEntryPublic,
    AuditHead,
    LoginThrottle,
)
from server.models.device import (
    DEVICE_TYPES,
    Device,
    DeviceBase,
    DeviceCreate,
    DevicePublic,
    DevicesPublic,
)
from server.models.incident import (
    CHANNELS,
    RESOLUTIONS,
    Incident,
    IncidentClose,
    IncidentCreate,
    IncidentPublic,
    IncidentSession,
    IncidentsPublic,
    IncidentUpdate,
)
from server.models.instance import ServerInstance
from server.models.knowledge import (
    KnowledgeArticle,
    KnowledgeArticleCreate,
    KnowledgeArticlePublic,
    KnowledgeHit,
    KnowledgeHits,
)
from server.models.session import (
    ExecRequest,
    ExecResultPublic,
    RemoteSession,
    RemoteSessionCreate,
    RemoteSessionPublic,
    RemoteSessionsPublic,
    UserSSHKey,
)
from server.models.telemetry import Alert, AlertPublic, TelemetryRollup, TelemetrySample
from server.models.user import ROLES, ApiToken, User, UserPublic, UsersPublic, role_at_least
from shared.wire import OPEN_SESSION_STATES as OPEN_STATES
from shared.wire import SESSION_STATES

__all__ = [
    "CHANNELS",
    "DEVICE_TYPES",
    "GENESIS_HASH",
    "OPEN_STATES",
    "RESOLUTIONS",
    "ROLES",
    "SESSION_STATES",
    "Alert",
    "AlertPublic",
    "ApiToken",
    "AuditEntriesPublic",
    "AuditEntry",
    "AuditEntryPublic",
    "AuditHead",
    "Device",
    "DeviceBase",
    "DeviceCreate",
    "DevicePublic",
    "DevicesPublic",
    "ExecRequest",
    "ExecResultPublic",
    "Incident",
    "IncidentClose",
    "IncidentCreate",
    "IncidentPublic",
    "IncidentSession",
    "IncidentUpdate",
    "IncidentsPublic",
    "KnowledgeArticle",
    "KnowledgeArticleCreate",
    "KnowledgeArticlePublic",
    "KnowledgeHit",
    "KnowledgeHits",
    "LoginThrottle",
    "RemoteSession",
    "RemoteSessionCreate",
    "RemoteSessionPublic",
    "RemoteSessionsPublic",
    "ServerInstance",
    "TelemetryRollup",
    "TelemetrySample",
    "User",
    "UserPublic",
    "UserSSHKey",
    "UsersPublic",
    "role_at_least",
]
