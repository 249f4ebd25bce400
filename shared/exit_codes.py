"""The exit statuses of every ``fieldlink`` command: one per kind of failure, defined once.

The same kind of failure ends every command with the same status, whichever
group it belongs to (docs/operations.md, "Exit statuses"). fieldlink's errors
carry theirs (:attr:`shared.errors.FieldlinkError.exit_code`); an answer of
the API is mapped by its HTTP status in :func:`for_http_status`, the one
mapping the operator's client uses. ``exec`` and ``ssh`` are the exception
that proves the rule: they exit with the remote command's status, so their own
errors are :data:`REMOTE_OWN_ERROR` (255), as OpenSSH's are.
"""

from __future__ import annotations

from typing import Final

from shared.cli_language import N_

#: Done.
OK: Final = 0
#: Failed for a reason none of the others names (a session closed, a check failed...).
FAILURE: Final = 1
#: The command line or a value given is wrong (unknown command or option, bad input, bad config).
USAGE: Final = 2
#: What the command names does not exist (device, session, user, customer...).
NOT_FOUND: Final = 3
#: Not logged in, wrong credentials, expired token, or not allowed (role, another's session).
AUTH: Final = 4
#: It exists already, or its state forbids the change (a closed session, a busy device).
CONFLICT: Final = 5
#: What it needs cannot be reached or is not installed (server, broker, database, an extra).
UNAVAILABLE: Final = 6
#: Stopped by Ctrl-C, SIGTERM or SIGHUP (128 + SIGINT, as shells report it).
INTERRUPTED: Final = 130
#: ``exec`` and ``ssh``: fieldlink's own error, out of the way of a remote exit status.
REMOTE_OWN_ERROR: Final = 255

#: Every status with its meaning, for ``fieldlink --help`` (translated there) and the docs.
MEANINGS: Final[dict[int, str]] = {
    OK: N_("done"),
    FAILURE: N_("failed (anything below does not name)"),
    USAGE: N_("wrong command line, input or configuration"),
    NOT_FOUND: N_("not found"),
    AUTH: N_("not logged in or not allowed"),
    CONFLICT: N_("conflict: exists already, or its state forbids it"),
    UNAVAILABLE: N_("server, broker or database unreachable, or an extra not installed"),
    INTERRUPTED: N_("interrupted (Ctrl-C, SIGTERM, SIGHUP)"),
    REMOTE_OWN_ERROR: N_("exec and ssh: fieldlink's own error (else the remote status)"),
}


def for_http_status(status: int) -> int:
    """The exit status for an API answer's HTTP status (the one mapping of the client)."""
    if status < 400:
        return OK
    if status in (400, 413, 414, 422):
        return USAGE
    if status in (401, 403):
        return AUTH
    if status in (404, 410):
        return NOT_FOUND
    if status in (409, 412, 423):
        return CONFLICT
    if status in (429, 502, 503, 504):
        return UNAVAILABLE
    return FAILURE
