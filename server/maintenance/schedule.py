"""When a maintenance window is open: RFC 5545 rules in the window's time zone (python-dateutil).

Pure functions over a window's ``starts_at``, ``duration_minutes``, ``rrule`` and
``timezone``; no database. A recurring window's rule is read with its first start
as ``DTSTART`` in its own zone, so its occurrences keep their wall-clock time
across daylight-saving changes. Rules are limited to what a maintenance plan
needs: ``FREQ`` of ``DAILY`` or coarser (a secondly or minutely rule would expand
without bound), no ``DTSTART`` of their own (the window's start is it).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

from shared.errors import InvalidInput

#: The frequencies a window's rule may use.
ALLOWED_FREQS = frozenset({"DAILY", "WEEKLY", "MONTHLY", "YEARLY"})
#: How far ahead the next occurrences are looked for.
LOOKAHEAD = timedelta(days=366)
_FREQ = re.compile(r"(?:^|;)FREQ=([A-Z]+)(?:;|$)")


@dataclass(frozen=True, slots=True)
class Timing:
    """What decides when a window is open."""

    starts_at: datetime
    duration_minutes: int
    rrule: str | None
    timezone: str


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``.

    Raises:
        InvalidInput: for a name the zone database does not know.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)"
        raise InvalidInput(msg) from exc


def normal_rule(text: str) -> str:
    """``text`` as stored: upper case, no ``RRULE:`` prefix, checked for what a window allows.

    Raises:
        InvalidInput: for a rule that is not one RRULE, has its own DTSTART, or repeats
            more often than daily.
    """
    rule = text.strip().upper()
    rule = rule.removeprefix("RRULE:")
    if not rule or "\n" in rule or "DTSTART" in rule or ":" in rule:
        msg = "rrule: one RFC 5545 RRULE without DTSTART, e.g. FREQ=WEEKLY;BYDAY=SU"
        raise InvalidInput(msg)
    match = _FREQ.search(rule)
    if match is None or match.group(1) not in ALLOWED_FREQS:
        msg = "rrule: FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY"
        raise InvalidInput(msg)
    return rule


@functools.lru_cache(maxsize=1024)
def _rule(text: str, dtstart: datetime) -> rrule:
    parsed = rrulestr(text, dtstart=dtstart, cache=True)
    if not isinstance(parsed, rrule):  # pragma: no cover - normal_rule allows one RRULE only
        msg = "rrule: one RRULE"
        raise InvalidInput(msg)
    return parsed


def parse_rule(text: str, starts_at: datetime, timezone: str) -> rrule:
    """The rule of a window starting at ``starts_at``, in ``timezone``.

    Raises:
        InvalidInput: for a rule dateutil cannot read, or one with no occurrence.
    """
    dtstart = starts_at.astimezone(zone(timezone))
    try:
        rule = _rule(normal_rule(text), dtstart)
    except (ValueError, TypeError) as exc:
        msg = f"rrule: {exc}"
        raise InvalidInput(msg) from exc
    if rule.after(dtstart, inc=True) is None:
        msg = "rrule: the rule has no occurrence"
        raise InvalidInput(msg)
    return rule


def local_start(start: datetime, timezone: str) -> datetime:
    """``start`` as an aware time: a time without offset is a wall-clock time in ``timezone``."""
    if start.tzinfo is None:
        return start.replace(tzinfo=zone(timezone)).astimezone(UTC)
    return start.astimezone(UTC)


def occurrence_at(timing: Timing, at: datetime) -> tuple[datetime, datetime] | None:
    """The occurrence in progress at ``at`` (``[start, end)`` in UTC), or ``None``."""
    length = timedelta(minutes=timing.duration_minutes)
    if timing.rrule is None:
        start = timing.starts_at
    else:
        # With equal lengths, the latest start at or before ``at`` ends last: if any
        # occurrence covers ``at``, that one does.
        found = parse_rule(timing.rrule, timing.starts_at, timing.timezone).before(
            at.astimezone(zone(timing.timezone)), inc=True
        )
        if found is None:
            return None
        start = found.astimezone(UTC)
    end = start + length
    return (start, end) if start <= at < end else None


def next_starts(timing: Timing, after: datetime, limit: int = 5) -> list[datetime]:
    """The starts of the next occurrences after ``after`` (UTC, within a year)."""
    if timing.rrule is None:
        return [timing.starts_at] if timing.starts_at > after else []
    rule = parse_rule(timing.rrule, timing.starts_at, timing.timezone)
    starts: list[datetime] = []
    cursor = after.astimezone(zone(timing.timezone))
    horizon = after + LOOKAHEAD
    while len(starts) < limit:
        found = rule.after(cursor)
        if found is None or found > horizon:
            break
        starts.append(found.astimezone(UTC))
        cursor = found
    return starts
