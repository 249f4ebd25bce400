"""A year of believable demo incidents, labelled as such, with the trend of a remote program.

Month by month, more calls are fixed remotely: self-resolution climbs from
about 60% to about 80%, remote sessions are used more, dispatches fall. Times
to restore follow the device type: a dispatch takes hours to days, a remote
fix minutes to hours. Every demo incident has an ``external_id`` starting
``demo-`` and a symptom starting ``[demo]``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from server.kpi.compute import INCIDENT_TABLE
from server.models import Device
from shared.ids import utcnow

logger = logging.getLogger(__name__)

DEMO_PREFIX = "demo-"
_SYMPTOMS: dict[str, list[tuple[str, str]]] = {
    "mfp": [
        ("SC-541", "fuser thermistor open"),
        ("J-201", "paper jam in tray 2"),
        ("SC-899", "controller firmware hangs after scan"),
        ("TN-LOW", "prints streaked, toner low"),
        ("NET-01", "cannot reach the print server"),
    ],
    "imaging": [
        ("DICOM-ECHO", "PACS C-ECHO fails"),
        ("DISK-CACHE", "image cache disk full"),
        ("SVC-RECON", "reconstruction service stopped"),
        ("CAL-DRIFT", "detector calibration out of range"),
    ],
    "server": [
        ("SMART-5", "disk reallocated sectors rising"),
        ("SVC-DOWN", "application service not responding"),
        ("MEM-HIGH", "memory exhausted, swapping"),
        ("CERT-EXP", "TLS certificate expired"),
    ],
}
#: Median hours a dispatch takes to restore each type (an engineer has to travel).
_DISPATCH_TTR_H = {"mfp": 20.0, "imaging": 10.0, "server": 7.0}
_CHANNELS = ("phone", "phone", "phone", "phone", "phone", "phone", "web", "web", "email", "alert")


def _month_start(now: datetime, months_back: int) -> datetime:
    index = now.year * 12 + now.month - 1 - months_back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _lognormal_hours(rng: random.Random, median: float, spread: float = 0.6) -> float:
    return median * math.exp(rng.gauss(0.0, spread))


def _resolution(rng: random.Random, progress: float) -> str:
    if rng.random() < 0.06:
        return "no_fault"
    self_resolved = 0.60 + 0.20 * progress + rng.uniform(-0.02, 0.02)
    if rng.random() >= self_resolved:
        return "dispatch"
    remote_share = 0.45 + 0.30 * progress
    return "remote" if rng.random() < remote_share else "phone"


def _incident(
    rng: random.Random,
    device: Device,
    opened_at: datetime,
    progress: float,
    external_id: str,
    now: datetime,
) -> dict[str, Any]:
    resolution = _resolution(rng, progress)
    code, text = rng.choice(_SYMPTOMS.get(device.type, _SYMPTOMS["server"]))
    channel = rng.choice(_CHANNELS)
    down_at = opened_at - timedelta(minutes=rng.uniform(0, 120))
    if channel == "alert":
        down_at = opened_at
    answered_at = (
        None
        if channel in ("alert", "email") or rng.random() < 0.04
        else opened_at + timedelta(seconds=_lognormal_hours(rng, 45 - 20 * progress, 0.5))
    )
    if resolution == "dispatch":
        ttr = _lognormal_hours(rng, _DISPATCH_TTR_H.get(device.type, 10.0), 0.5)
    elif resolution == "remote":
        ttr = _lognormal_hours(rng, 1.3, 0.6)
    elif resolution == "phone":
        ttr = _lognormal_hours(rng, 0.8, 0.6)
    else:
        ttr = _lognormal_hours(rng, 0.4, 0.5)
    restored_at = down_at + timedelta(hours=ttr)
    closed_at = max(restored_at, opened_at) + timedelta(minutes=rng.uniform(5, 180))
    used_session = {
        "remote": True,
        "phone": rng.random() < 0.1,
        "dispatch": rng.random() < 0.15 + 0.35 * progress,
        "no_fault": rng.random() < 0.3,
    }[resolution]
    row: dict[str, Any] = {
        "external_id": external_id,
        "device_id": device.id,
        "device_type": device.type,
        "opened_at": opened_at,
        "answered_at": answered_at,
        "down_at": down_at,
        "restored_at": restored_at,
        "closed_at": closed_at,
        "channel": channel,
        "symptom": f"[demo] {text}",
        "error_code": code,
        "resolution": resolution,
        "remote_session_used": used_session,
        "dispatched_at": None,
        "engineer_arrived_at": None,
        "created_at": now,
        "updated_at": now,
    }
    if resolution == "dispatch":
        row["dispatched_at"] = down_at + timedelta(hours=ttr * 0.1)
        row["engineer_arrived_at"] = down_at + timedelta(hours=ttr * 0.6)
    if closed_at > now:
        # Still being worked on.
        row.update(
            restored_at=None,
            closed_at=None,
            resolution=None,
            dispatched_at=None,
            engineer_arrived_at=None,
        )
    return row


def seed_demo_incidents(
    session: Session,
    devices: Sequence[Device],
    months: int = 12,
    seed: int = 0,
    now: datetime | None = None,
    per_month: int | None = None,
) -> int:
    """Record ``months`` months of demo incidents (up to ``now``) for ``devices``; commits.

    ``per_month`` defaults to about 0.6 incidents per device and month, at
    least 80 (so that a small demo fleet still shows the trend), at most 2,000.
    Seeding the same ``seed`` again adds nothing.

    Returns:
        How many incidents were recorded.
    """
    if not devices or months < 1:
        return 0
    prefix = f"{DEMO_PREFIX}{seed}-"
    incident = INCIDENT_TABLE.c
    seeded = session.execute(
        sa.select(sa.func.count()).where(incident.external_id.like(f"{prefix}%"))
    ).scalar_one()
    if seeded:
        logger.info("demo incidents of seed %s already recorded", seed)
        return 0
    rng = random.Random(seed)  # noqa: S311  (demo data, reproducible by seed)
    now = (now or utcnow()).astimezone(UTC)
    count = per_month or min(2000, max(80, round(len(devices) * 0.6)))
    rows: list[dict[str, Any]] = []
    for back in range(months - 1, -1, -1):
        start = _month_start(now, back)
        end = _month_start(now, back - 1) if back else now
        progress = (months - 1 - back) / max(1, months - 1)
        span = (end - start).total_seconds()
        # The current month only so far.
        month_count = round(count * rng.uniform(0.9, 1.1) * span / (30.4 * 86400))
        for _ in range(month_count):
            opened_at = start + timedelta(seconds=rng.uniform(0, span))
            if opened_at >= now:
                continue
            external_id = f"{prefix}{len(rows):06d}"
            rows.append(_incident(rng, rng.choice(devices), opened_at, progress, external_id, now))
    for i in range(0, len(rows), 5000):
        session.execute(sa.insert(INCIDENT_TABLE), rows[i : i + 5000])
    session.commit()
    logger.info("recorded %d demo incidents over %d months", len(rows), months)
    return len(rows)
