"""Health samples as they go on the wire (``shared.wire.HealthSampleReport``), without pydantic.

The server validates every sample with the pydantic model (``shared.models.HealthSample``);
the agent only writes the same JSON, which keeps pydantic (about 19 MB resident) out of it.
"""

from __future__ import annotations

import json
from datetime import datetime

from agent.health.collectors.base import Reading, status_of
from shared.ids import isoformat_z, new_id, utcnow
from shared.wire import PROTOCOL_VERSION, HealthSampleReport


def new_boot_id() -> str:
    """A fresh random id for one run of the agent (samples count ``seq`` from 0 under it)."""
    return new_id()


class SampleBuilder:
    """Numbers one device's samples: ``seq`` 0, 1, 2... under one ``boot_id``.

    Args:
        device_id: The device the samples are from.
        boot_id: This run's id; a new random one when ``None``.
    """

    def __init__(self, device_id: str, boot_id: str | None = None) -> None:
        self.device_id = device_id
        self.boot_id = boot_id or new_boot_id()
        self.next_seq = 0

    def build(self, reading: Reading, *, dropped: int = 0, ts: datetime | None = None) -> bytes:
        """The next sample as compact UTF-8 JSON, without ``sent_at`` (added at publish time).

        Args:
            reading: What the collectors observed.
            dropped: Samples the outbox dropped since the previous sample.
            ts: When it was collected (now by default).
        """
        sample: HealthSampleReport = {
            "v": PROTOCOL_VERSION,
            "device_id": self.device_id,
            "boot_id": self.boot_id,
            "seq": self.next_seq,
            "ts": isoformat_z(ts or utcnow()),
            "status": status_of(reading.faults),
            "metrics": reading.metrics,
            "faults": reading.faults,
            "outbox_dropped": dropped,
        }
        self.next_seq += 1
        return json.dumps(sample, separators=(",", ":"), allow_nan=False).encode()


def with_sent_at(payload: bytes, sent_at: datetime | None = None) -> bytes:
    """``payload`` (a JSON object from :meth:`SampleBuilder.build`) with ``sent_at`` added."""
    stamp = isoformat_z(sent_at or utcnow())
    return b'%s,"sent_at":"%s"}' % (payload.rstrip()[:-1], stamp.encode())
