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
