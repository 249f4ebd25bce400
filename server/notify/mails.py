"""The e-mail a rule sends, in the rule's language (``language``; English by default).

The words are the console's catalog's (gettext domain ``messages``, ``make
translations``); what devices and people wrote (a fault's message, a device's name,
a session's reason) stays as written. Times are in UTC, written the reader's way
(:func:`server.i18n.format_utc`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from server import i18n
from shared.translatable import N_

HEADINGS: Final = {"problem": N_("PROBLEM"), "resolved": N_("RESOLVED")}
NOTICE: Final = N_("NOTICE")
#: The kinds of event, as a message names them (the console's words).
KIND_NAMES: Final = {
    "fault": N_("fault"),
    "offline": N_("offline"),
    "consent": N_("consent"),
    "followup": N_("follow-up"),
    "test": N_("test"),
}
STATE_NAMES: Final = {"problem": N_("problem"), "resolved": N_("resolved"), "event": N_("one-off")}
#: Why a device went offline (the same words as the device page's badges).
OFFLINE_REASONS: Final = {
    "shutdown": N_("shut down"),
    "connection_lost": N_("connection lost"),
    "unreachable": N_("unreachable from its gateway"),
    "silent": N_("silent (no report)"),
    "gateway_offline": N_("its gateway is offline"),
    "gateway_revoked": N_("its gateway was revoked"),
    "revoked": N_("revoked"),
}


def _width(text: str) -> int:
    """Columns a text takes in a fixed-width font (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _what_happened(payload: Mapping[str, Any], _: Callable[[str], str], language: str) -> str:
    """The message's first line after its heading: said by fieldlink in the reader's
    language, or a device's own words as written (a fault)."""
    kind = str(payload.get("kind", ""))
    state = str(payload.get("state", ""))
    details = payload.get("details") or {}
    written = str(payload.get("message", ""))
    if kind == "offline":
        if state == "resolved":
            return _("The device is online again.")
        reason = details.get("reason")
        said = _(OFFLINE_REASONS[reason]) if reason in OFFLINE_REASONS else reason
        return _("The device went offline (%(reason)s).") % {"reason": said or _("unknown")}
    if kind == "consent" and details.get("session_id"):
        return _("Session %(session)s by %(operator)s awaits the site's approval: %(reason)s") % {
            "session": details["session_id"],
            "operator": details.get("operator", ""),
            "reason": details.get("reason", ""),
        }
    if kind == "followup" and details.get("followup_id"):
        numbers = {"followup": details["followup_id"], "incident": details.get("incident_id")}
        if state == "resolved":
            return _("Follow-up #%(followup)s of incident #%(incident)s is closed.") % numbers
        due = details.get("due_at")
        if due:
            when = i18n.format_utc(datetime.fromisoformat(str(due)), language)
            return _(
                "Follow-up #%(followup)s of incident #%(incident)s is overdue since %(due)s: "
                "%(reason)s"
            ) % {**numbers, "due": when, "reason": details.get("reason", "")}
    if kind == "test":
        rule = payload.get("rule", "")
        if details.get("actor"):
            return _("A test of notification rule %(rule)s, sent by %(actor)s.") % {
                "rule": rule,
                "actor": details["actor"],
            }
        return _("A test of notification rule %(rule)s.") % {"rule": rule}
    return written


def mail_text(payload: Mapping[str, Any], language: str = "en") -> tuple[str, str]:
    """The subject and body of the e-mail about ``payload``, in ``language``."""
    _ = i18n.messages(language).gettext
    device = payload.get("device") or {}
    kind = str(payload.get("kind", ""))
    state = str(payload.get("state", ""))
    heading = _(HEADINGS.get(state, NOTICE))
    what = payload.get("code") or _(KIND_NAMES.get(kind, kind))
    customer = device.get("customer") or ""
    subject = _("[fieldlink] %(heading)s: %(what)s on %(device)s (%(customer)s)") % {
        "heading": heading,
        "what": what,
        "device": device.get("id"),
        "customer": customer,
    }
    event = f"{_(KIND_NAMES.get(kind, kind))} {_(STATE_NAMES.get(state, state))}"
    if payload.get("severity"):
        event += _(", severity %(severity)s") % {"severity": _(str(payload["severity"]))}
    try:
        at = i18n.format_utc(datetime.fromisoformat(str(payload.get("at"))), language)
    except ValueError:
        at = str(payload.get("at"))
    facts = [
        (
            _("Device"),
            _("%(id)s (%(type)s, %(model)s, serial %(serial)s)")
            % {
                "id": device.get("id"),
                "type": device.get("type"),
                "model": device.get("model"),
                "serial": device.get("serial"),
            },
        ),
        (_("Customer"), f"{customer} {device.get('customer_number') or ''}".rstrip()),
        (_("Site"), device.get("site") or "-"),
        (_("Event"), event),
        (_("At"), at),
        (_("Rule"), str(payload.get("rule"))),
    ]
    column = max(_width(label) for label, _value in facts) + 2
    lines = [f"{heading}: {_what_happened(payload, _, language)}", ""]
    lines += [f"{label}:{' ' * (column - _width(label) - 1)}{value}" for label, value in facts]
    return subject, "\n".join(lines) + "\n"
