"""Database operations by resource; keyword-only, no HTTP in here.

:mod:`.users` (users and tokens), :mod:`.devices` (the registry),
:mod:`.alerts`, :mod:`.enrollment` (registration, enrollment, renewal,
revocation). ``from server import crud`` then ``crud.create_user(...)`` reads
the same as before the split.
"""

from server.crud.alerts import open_alerts, recent_alerts
from server.crud.devices import (
    add_device,
    check_gateway,
    create_device,
    get_device,
    list_devices,
    watched_by,
)
from server.crud.enrollment import (
    enroll,
    new_enrollment_token,
    register_device,
    renew,
    revoke_device,
)
from server.crud.errors import InvalidInput
from server.crud.users import authenticate, create_user, get_user, issue_token, user_for_token

__all__ = [
    "InvalidInput",
    "add_device",
    "authenticate",
    "check_gateway",
    "create_device",
    "create_user",
    "enroll",
    "get_device",
    "get_user",
    "issue_token",
    "list_devices",
    "new_enrollment_token",
    "open_alerts",
    "recent_alerts",
    "register_device",
    "renew",
    "revoke_device",
    "user_for_token",
    "watched_by",
]
