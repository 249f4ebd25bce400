"""Texts the console composes in Python (page titles, role names), for the catalogs.

``N_`` marks a text for extraction (``make translations``) without translating it
where it is written; :func:`server.web.templating.render` translates a page's
title when it renders, in the viewer's language.
"""

from __future__ import annotations

from server.kpi.report import KPI_DEFINITIONS
from server.kpi.voice import VOICE_DEFINITIONS
from server.web.voice import VOICE_FIGURES
from shared.translatable import N_ as N_

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
# -- The incidents, session and approval-link pages (i18n-incidents). --------------------------

#: A remote session's states as the session page names them (``awaiting_consent`` reads
#: "awaiting consent").
SESSION_STATE_NAMES = {
    "requested": N_("requested"),
    "awaiting_consent": N_("awaiting consent"),
    "connecting": N_("connecting"),
    "active": N_("active"),
    "closed": N_("closed"),
}
#: Why a session ended, as the session page names it.
CLOSE_REASON_NAMES = {
    "operator": N_("operator"),
    "idle_timeout": N_("idle timeout"),
    "max_duration": N_("max duration"),
    "site_denied": N_("site denied"),
    "site_ended": N_("site ended"),
    "agent_unreachable": N_("agent unreachable"),
    "server_restart": N_("server restart"),
    "access_revoked": N_("access revoked"),
    "operator_gone": N_("operator gone"),
    "error": N_("error"),
}
#: An incident's resolutions and channels, as the incidents page names them.
RESOLUTION_NAMES = {
    "remote": N_("remote"),
    "phone": N_("phone"),
    "dispatch": N_("dispatch"),
    "no_fault": N_("no fault"),
}
CHANNEL_NAMES = {
    "phone": N_("phone"),
    "web": N_("web"),
    "email": N_("email"),
    "alert": N_("alert"),
}
#: The titles of a session's pages (``id``: the session's id).
SESSION_TITLE = N_("Session %(id)s")
WATCHING_TITLE = N_("Watching session %(id)s")
#: The names the session page and the incidents page translate, as their templates call them.
SESSION_PAGE_NAMES = {"state_names": SESSION_STATE_NAMES, "close_reason_names": CLOSE_REASON_NAMES}
INCIDENT_PAGE_NAMES = {"resolution_names": RESOLUTION_NAMES, "channel_names": CHANNEL_NAMES}

# --- The admin, account, token and dashboard pages (i18n-admin) ---------------------------
#: The meanings of the KPIs and of the customer's voice figures, as the dashboard shows
#: them: marked for the catalogs where they are defined (``server.kpi.report.KPI_DEFINITIONS``,
#: ``server.kpi.voice.VOICE_DEFINITIONS``, whose formula ``|A| / |S|`` is not a text).
KPI_MEANINGS = tuple(KPI_DEFINITIONS.values())
VOICE_MEANINGS = tuple(VOICE_DEFINITIONS.values())
#: The labels of ``server.web.voice.VOICE_FIGURES`` (marked there) and the voice tables'
#: column heads.
VOICE_LABELS = (
    *(figure.label for figure in VOICE_FIGURES),
    N_("surveys"),
    N_("answers"),
    N_("nps"),
    N_("csat call center"),
    N_("csat remote fix"),
    N_("csat on site"),
)
#: Where a dashboard baseline comes from (``KpiReport.baseline_source``).
BASELINE_SOURCES = (N_("measured"), N_("configured"))

# -- The notifications page (Admin > Notifications). ---------------------------------------------

#: The kinds of event a rule hears of (``server.notify.rules.EVENT_KINDS``).
NOTIFY_EVENT_NAMES = {
    "fault": N_("fault"),
    "offline": N_("offline"),
    "consent": N_("consent"),
    "followup": N_("follow-up"),
}
#: A message's channels and its states in the outbox.
NOTIFY_CHANNEL_NAMES = {"webhook": N_("webhook"), "email": N_("e-mail")}
NOTIFY_STATUS_NAMES = {
    "queued": N_("queued"),
    "sent": N_("sent"),
    "dead": N_("given up"),
    "cancelled": N_("cancelled"),
}
#: The names the notifications page translates, as its template calls them.
NOTIFY_PAGE_NAMES = {
    "event_names": NOTIFY_EVENT_NAMES,
    "channel_names": NOTIFY_CHANNEL_NAMES,
    "status_names": NOTIFY_STATUS_NAMES,
}
