"""Counting health samples that never arrived, from each boot's sequence numbers.

An agent numbers its samples from 0 for each ``boot_id``. The server keeps, per
device, the current boot and the highest sequence number seen in it; a jump
counts the skipped numbers as missing, and a sample that arrives late into such
a gap is subtracted again. Duplicates (QoS 1 redeliveries) never reach this
logic: the database's unique ``(device_id, boot_id, seq)`` filters them first.

A jump of more than :data:`MAX_SEQ_JUMP` numbers either way is not a gap: no
agent produces that many samples between two it sends (a million samples is
eleven days at one a second, a year at the default 30 s), so it is a broken or
hostile numbering. It is counted as a *reset* of the stream (its own event, so
that one ``seq`` of 10^12 cannot add a trillion to the fleet's missing count),
and the numbering goes on from the new value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

#: The largest jump of ``seq`` within a boot still counted as a gap (see the module doc).
MAX_SEQ_JUMP: Final = 1_000_000


@dataclass(frozen=True)
class SequenceMark:
    """Where a device's sample numbering stands: the current boot and its highest ``seq``."""

    boot_id: str | None
    last_seq: int | None
    #: Collection time (device clock) of the newest sample of the current boot.
    latest_ts: datetime | None


@dataclass(frozen=True)
class NewSample:
    """The fields of a newly stored sample that the accounting needs."""

    boot_id: str
    seq: int
    ts: datetime


@dataclass(frozen=True)
class SequenceOutcome:
    """What a batch of new samples did to a device's accounting."""

    mark: SequenceMark
    #: Change to ``telemetry_missing`` (negative when late samples filled gaps).
    missing_delta: int
    #: Samples that filled a gap counted missing before.
    late: int
    #: Samples of an older boot that arrived after a newer boot began (stored, not counted).
    stale_boot: int
    #: Implausible jumps of ``seq`` (past :data:`MAX_SEQ_JUMP`) taken as a new stream.
    resets: int = 0


def account_samples(mark: SequenceMark, samples: Iterable[NewSample]) -> SequenceOutcome:
    """Fold newly stored samples (in arrival order) into a device's sequence mark.

    A sample of another boot starts a new boot when it was collected after the
    newest sample of the current one; otherwise it is a straggler of an older
    boot and left out of the count. The numbers below the first ``seq`` seen of
    a boot count as missing (a boot starts at 0).
    """
    boot_id, last_seq, latest_ts = mark.boot_id, mark.last_seq, mark.latest_ts
    missing = late = stale = resets = 0
    for sample in samples:
        if boot_id is None or last_seq is None or sample.boot_id != boot_id:
            if latest_ts is not None and boot_id is not None and sample.ts <= latest_ts:
                stale += 1
                continue
            boot_id, last_seq, latest_ts = sample.boot_id, sample.seq, sample.ts
            if sample.seq > MAX_SEQ_JUMP:
                resets += 1  # not a million samples missing before it: a broken numbering
            else:
                missing += sample.seq
            continue
        if abs(sample.seq - last_seq) > MAX_SEQ_JUMP:
            # Neither a gap nor a late sample: the numbering jumped. Start over from here.
            resets += 1
            last_seq = sample.seq
        elif sample.seq > last_seq:
            missing += sample.seq - last_seq - 1
            last_seq = sample.seq
        else:
            # Not a duplicate (the database refused those), so it was counted missing.
            missing -= 1
            late += 1
        if latest_ts is None or sample.ts > latest_ts:
            latest_ts = sample.ts
    return SequenceOutcome(
        mark=SequenceMark(boot_id, last_seq, latest_ts),
        missing_delta=missing,
        late=late,
        stale_boot=stale,
        resets=resets,
    )
