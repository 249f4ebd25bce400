"""Estimating how far a device's clock is off the server's.

Each sample with ``sent_at`` gives ``sent_at - received_at`` = offset - delay,
where the delay (network, broker, our own queue) is never negative. The largest
value over a recent window is therefore the estimate least spoilt by queueing.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

#: Observations kept per device.
DEFAULT_WINDOW = 32


class ClockOffsetEstimator:
    """Smoothed device-minus-server clock offsets, per device, over the last observations.

    The window lives in this process only: the estimate is a smoothing, and
    every server process that sees a device's samples converges on the same value.
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._observations: dict[str, deque[float]] = {}

    def observe(self, device_id: str, sent_at: datetime, received_at: datetime) -> float:
        """Record one sample's times and return the device's current offset estimate (s)."""
        values = self._observations.get(device_id)
        if values is None:
            values = self._observations[device_id] = deque(maxlen=self._window)
        values.append((sent_at - received_at).total_seconds())
        return max(values)

    def estimate(self, device_id: str) -> float | None:
        """The current estimate, or ``None`` before the first observation."""
        values = self._observations.get(device_id)
        return max(values) if values else None

    def forget(self, device_id: str) -> None:
        """Drop a device's window (its clock was reset, or it rebooted)."""
        self._observations.pop(device_id, None)


def is_skewed(offset_s: float | None, max_skew_s: float) -> bool:
    """Whether an offset is past the allowed skew."""
    return offset_s is not None and abs(offset_s) > max_skew_s
