"""How far a sample's ``ts`` may be from the server's clock before the server stops believing it.

A sample's ``ts`` is the device's clock when it was collected. The device's
"latest" health is the sample with the greatest ``ts``, so one sample stamped
2099 would stay the latest until 2099 (later genuine samples look older), and
one stamped 1970 lands outside every chart. A ``ts`` is plausible when it is

- at most ``clock_skew_max_s`` plus :data:`FUTURE_MARGIN_S` ahead of the
  server's receive time (a clock that far ahead is flagged as skewed anyway), and
- at most ``telemetry_retention_days`` behind it: an agent's outbox does hold
  samples while the device is offline and sends them late, but never longer
  than the server keeps them.

An implausible sample is not rejected (its metrics are likely current: a
device with a dead RTC battery says 1970): it is stored with the server's
receive time as ``ts`` and flagged ``ts_untrusted``, and counted in
``fieldlink_telemetry_ts_untrusted_total``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from server.config import ServerSettings

#: Seconds past the clock-skew bound a ``ts`` may still be ahead of the server.
FUTURE_MARGIN_S: Final = 60.0


def future_bound_s(settings: ServerSettings) -> float:
    """Seconds a ``ts`` may be ahead of the server's receive time."""
    return settings.clock_skew_max_s + FUTURE_MARGIN_S


class TimestampBounds:
    """The bounds above, computed once (the check runs for every sample)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.ahead = timedelta(seconds=future_bound_s(settings))
        self.behind = timedelta(days=settings.telemetry_retention_days)

    def plausible(self, ts: datetime, received_at: datetime) -> bool:
        """Whether a sample's ``ts`` is within the bounds of ``received_at``."""
        return received_at - self.behind <= ts <= received_at + self.ahead


def plausible_ts(ts: datetime, received_at: datetime, settings: ServerSettings) -> bool:
    """Whether a sample's ``ts`` is within the bounds above of ``received_at``."""
    return TimestampBounds(settings).plausible(ts, received_at)
