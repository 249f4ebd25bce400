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
#: The meanings of the KPIs (``server.kpi.report.KPI_DEFINITIONS``) and of the customer's
#: voice figures (``server.kpi.voice.VOICE_DEFINITIONS``), as the dashboard shows them; a
#: test keeps them in step with those tables.
KPI_MEANINGS = (
    N_("incidents closed in the window (C)"),
    N_("share of C where a remote session was used"),
    N_("share of C opened by a device fault (channel alert) before any call"),
    N_("share of F (C without no_fault) resolved remotely or by phone"),
    N_("share of F resolved through a remote session"),
    N_("incidents of F resolved by sending an engineer"),
    N_("incidents of F resolved remotely"),
    N_("mean time to restore (restored_at - down_at) over F, hours"),
    N_("mean time to restore of remote resolutions, hours"),
    N_("mean time to restore of dispatches, hours"),
    N_("mean time from call to answer over answered incidents of C, seconds"),
    N_("sum over remote resolutions of max(0, baseline ttr - ttr), hours"),
    N_("sum over remote resolutions of the dispatch cost of the device type"),
)
VOICE_MEANINGS = (
    N_("surveys made for the incidents closed in the window (S)"),
    N_("surveys of S answered (A)"),
    N_("100 * (promoters (9-10) - detractors (0-6)) / |A|, -100 to 100"),
    N_("mean satisfaction 1-5 with the call center, over A that rated it"),
    N_("mean satisfaction 1-5 with the remote fix, over A that rated it"),
    N_("mean satisfaction 1-5 with the on-site visit, over A that rated it"),
    N_("follow-ups opened by low answers of A"),
    N_("share of the follow-ups due by now (or closed) that were closed by their due time"),
    N_("follow-ups still open past their due time"),
)
#: The labels of ``server.web.voice.VOICE_FIGURES`` and the voice tables' column heads.
VOICE_LABELS = (
    N_("NPS"),
    N_("CSAT call center"),
    N_("CSAT remote fix"),
    N_("CSAT on-site visit"),
    N_("Survey response rate"),
    N_("Follow-ups closed in time"),
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
