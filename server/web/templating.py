"""The console's Jinja2 environment and the filters its templates use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from server import i18n
from server.web import scripttexts
from server.web.readings import label
from server.web.texts import N_, ROLE_NAMES
from shared import __version__
from shared.errors import Conflict, NotFound

TEMPLATES_DIR = Path(__file__).parent / "templates"
#: The console's catalogs (gettext domain ``messages``): ``locale/<lang>/LC_MESSAGES``.
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"

templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, extensions=["jinja2.ext.i18n"]
    )
)


@dataclass(frozen=True)
class Notice:
    """What a page answering a form says above its content: what was wrong or what was done
    (``done`` with its ``done_args``), and the page's status code."""

    error: str | None = None
    done: str | None = None
    done_args: Mapping[str, str] = field(default_factory=dict)
    status_code: int = 200

    @classmethod
    def refused(cls, exc: Exception) -> Notice:
        """Why a form was refused: an ``HTTPException``'s detail and status (a wrong password
        or code: 401, 429 once locked), a state that forbids it (409), else bad input (422)."""
        if isinstance(exc, HTTPException):
            return cls(error=str(exc.detail), status_code=exc.status_code)
        return cls(error=str(exc), status_code=409 if isinstance(exc, Conflict | NotFound) else 422)

    def context(self) -> dict[str, Any]:
        """The page context's ``error``, ``done`` and ``done_args``."""
        return {"error": self.error, "done": self.done, "done_args": dict(self.done_args)}


#: A page with nothing to say above its content.
NO_NOTICE = Notice()


def gettext(message: str) -> str:
    """``message`` in the language of the page being rendered (:func:`server.i18n.current`)."""
    return i18n.catalog(LOCALE_DIR, DOMAIN, i18n.current()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The singular or plural of a message, in the language of the page being rendered."""
    return i18n.catalog(LOCALE_DIR, DOMAIN, i18n.current()).ngettext(singular, plural, count)


# One environment for every language: the callables read the page's language when called.
templates.env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]

#: Every page: never framed by another site (clickjacking), no sniffing, no referrer leaks.
SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page_language(request: Request, context: dict[str, Any]) -> str:
    """The language a page is rendered in: the viewer's setting, else the browser's."""
    viewer = context.get("viewer")
    preferred = getattr(getattr(viewer, "user", None), "language", None)
    return i18n.negotiate(preferred, request.headers.get("accept-language"))


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page from its template in the viewer's language, with the console's security headers."""
    language = page_language(request, context)
    with i18n.use(language):
        if isinstance(context.get("title"), str):
            context = {**context, "title": gettext(context["title"])}
        # Starlette renders the template here, in this thread: the language holds throughout.
        response: HTMLResponse = templates.TemplateResponse(
            request,
            name,
            {"lang": language, "html_lang": i18n.HTML_LANG[language], **context},
            status_code=status_code,
            headers={**SECURITY_HEADERS, "Content-Language": i18n.HTML_LANG[language]},
        )
    return response


def _utc_text(value: datetime | str | None) -> tuple[str, datetime | None]:
    """A time as ``YYYY-MM-DD HH:MM UTC`` and as a datetime (None when it is not one)."""
    if value is None or value == "":
        return "—", None
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text, None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC"), value


def _when(value: datetime | str | None, id: str | None = None) -> Markup:
    """A time as a ``<time>`` element reading ``YYYY-MM-DD HH:MM UTC``; the page's script
    (app.js) shows it in the viewer's time zone with the UTC time on hover. ``id`` names the
    element for a live update (it is then there even without a time)."""
    text, moment = _utc_text(value)
    ident = Markup(' id="{}"').format(id) if id else Markup("")
    if moment is None:
        return Markup("<time{}>{}</time>").format(ident, text) if id else Markup.escape(text)
    return Markup('<time{} datetime="{}" title="{}">{}</time>').format(
        ident, _iso(moment), text, text
    )


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _percent(value: float | None, digits: int = 0) -> str:
    """A fraction as the reader writes a percentage (``62 %`` in French, ``62%`` in English)."""
    return "—" if value is None else i18n.format_percent(value, digits)


def _number(value: Any, digits: int = 0) -> str:
    """A number with the reader's digit grouping and decimal sign."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return i18n.format_number(value)
    return i18n.format_number(float(value), digits)


#: Why a device went offline, as an operator reads it (the agent's or the server's word);
#: translated where shown (:func:`device_badges`).
OFFLINE_REASONS = {
    "shutdown": N_("shut down"),
    "connection_lost": N_("connection lost"),
    "unreachable": N_("unreachable from its gateway"),
    "silent": N_("silent (no report)"),
    "gateway_offline": N_("its gateway is offline"),
    "gateway_revoked": N_("its gateway was revoked"),
    "revoked": N_("revoked"),
}


def _skew(seconds: float) -> str:
    """A clock offset as ``3 min ahead`` / ``2 h 5 min behind`` (in the page's language; the
    units stay as they are)."""
    size = abs(seconds)
    if size < 120:
        amount = f"{size:.0f} s"
    elif size < 7200:
        amount = f"{size / 60:.0f} min"
    else:
        hours, minutes = divmod(round(size / 60), 60)
        amount = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if seconds > 0:
        return gettext("%(amount)s ahead") % {"amount": amount}
    return gettext("%(amount)s behind") % {"amount": amount}


def device_badges(device: Any) -> list[dict[str, str]]:
    """A device's state badges: connection (revoked, online, offline and why), health, clock,
    in the language of the page being rendered.

    Health is green only for a device that is online and not revoked: a revoked or offline
    device's last report is history, shown grey as ``last: ok`` (the same rules as
    ``fl.deviceBadges`` in app.js).
    """

    def get(name: str) -> Any:
        return device.get(name) if isinstance(device, dict) else getattr(device, name, None)

    badges: list[dict[str, str]] = []
    reason = get("online_reason")
    revoked = get("revoked_at")
    if revoked:
        badges.append(
            {"cls": "revoked", "text": gettext("revoked"), "title": gettext("Certificate revoked")}
        )
    elif get("online"):
        badges.append(
            {
                "cls": "online",
                "text": gettext("online"),
                "title": gettext("Connected"),
                "online": "true",
            }
        )
    else:
        why = OFFLINE_REASONS.get(
            reason or "", N_("never connected") if not get("last_seen") else ""
        )
        text = gettext("offline · %(why)s") % {"why": gettext(why)} if why else gettext("offline")
        badges.append({"cls": "offline", "text": text, "title": reason or "", "online": "false"})
    status = get("status")
    live = get("online") and not revoked
    if not status:
        badges.append(
            {"cls": "unknown", "text": gettext("no data"), "title": gettext("No health report yet")}
        )
    elif live:
        badges.append(
            {"cls": f"health-{status}", "text": gettext(status), "title": gettext("Latest health")}
        )
    else:
        badges.append(
            {
                "cls": "stale",
                "text": gettext("last: %(status)s") % {"status": gettext(status)},
                "title": gettext("Its last report, not current"),
            }
        )
    offset = get("clock_offset_s")
    if get("clock_skewed") and offset is not None:
        badges.append(
            {
                "cls": "skew",
                "text": gettext("clock %(offset)s") % {"offset": _skew(offset)},
                "title": f"{offset:+.0f} s",
            }
        )
    return badges


templates.env.filters["when"] = _when
templates.env.filters["iso"] = _iso
templates.env.filters["percent"] = _percent
templates.env.filters["number"] = _number
templates.env.globals["version"] = __version__
templates.env.globals["device_badges"] = device_badges
#: The translations of the texts the page's scripts write (``fl.t`` in app.js).
templates.env.globals["script_texts"] = scripttexts.embedded
templates.env.globals["metric_label"] = label
templates.env.globals["language_names"] = i18n.LANGUAGE_NAMES
templates.env.globals["language_tags"] = i18n.HTML_LANG
templates.env.globals["role_names"] = ROLE_NAMES
