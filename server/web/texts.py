"""Texts the console composes in Python (page titles, role names), for the catalogs.

``N_`` marks a text for extraction (``make translations``) without translating it
where it is written; :func:`server.web.templating.render` translates a page's
title when it renders, in the viewer's language.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """``message`` unchanged: marked for the catalogs, translated where it is shown."""
    return message


#: The titles of the console's pages.
PAGE_TITLES = (
    N_("Admin: users"),
    N_("Admin: devices"),
    N_("Admin: audit log"),
    N_("Admin: notifications"),
    N_("Not allowed"),
    N_("Log in"),
    N_("Your account"),
    N_("Customers"),
    N_("Dashboard"),
    N_("Not found"),
    N_("Desk"),
    N_("Incidents"),
)
#: The roles, as the console names them.
ROLE_NAMES = {
    "site": N_("site"),
    "operator": N_("operator"),
    "manager": N_("manager"),
    "admin": N_("admin"),
}

# -- the device page (i18n-device): values shown as words, translated where shown ---------------
#: Health statuses, fault severities, session states (``_`` replaced by a space).
DEVICE_VALUE_WORDS = (
    N_("ok"),
    N_("warning"),
    N_("fault"),
    N_("info"),
    N_("error"),
    N_("critical"),
    N_("requested"),
    N_("awaiting consent"),
    N_("connecting"),
    N_("active"),
    N_("closed"),
)
#: Incident channels and resolutions (``_`` replaced by a space).
INCIDENT_VALUE_WORDS = (
    N_("phone"),
    N_("web"),
    N_("email"),
    N_("alert"),
    N_("remote"),
    N_("dispatch"),
    N_("no fault"),
)
