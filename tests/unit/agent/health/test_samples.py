"""Samples are shared.models.HealthSample JSON: the server's own model accepts them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent.health.collectors import Reading
from agent.health.samples import SampleBuilder, with_sent_at
from shared.models import HealthSample, parse_message


def test_sample_validates_as_health_sample() -> None:
    builder = SampleBuilder("mfp-0042")
    reading = Reading(
        metrics={"cpu_percent": 3.2, "disk_percent:/": 72.1, "mfp.toner_black_percent": 23},
        faults=[{"code": "SC-541", "severity": "error", "message": "Fuser thermistor open"}],
    )
    sample = parse_message(HealthSample, builder.build(reading, dropped=4))
    assert sample.device_id == "mfp-0042"
    assert sample.boot_id == builder.boot_id
    assert sample.seq == 0
    assert sample.status == "fault"
    assert sample.outbox_dropped == 4
    assert sample.metrics["mfp.toner_black_percent"] == 23
    assert sample.sent_at is None
    assert sample.ts.tzinfo is not None


def test_seq_counts_from_zero_per_boot_id() -> None:
    first = SampleBuilder("srv-1")
    seqs = [json.loads(first.build(Reading()))["seq"] for _ in range(3)]
    assert seqs == [0, 1, 2]
    second = SampleBuilder("srv-1")
    assert second.boot_id != first.boot_id
    assert json.loads(second.build(Reading()))["seq"] == 0


def test_sent_at_is_added_at_publish_time() -> None:
    payload = SampleBuilder("srv-1").build(Reading(metrics={"load1": 0.5}))
    sent = datetime(2026, 11, 22, 23, 0, 1, 500_000, tzinfo=UTC)
    sample = parse_message(HealthSample, with_sent_at(payload, sent))
    assert sample.sent_at == sent
    assert sample.metrics == {"load1": 0.5}
    assert sample.status == "ok"


def test_warning_status() -> None:
    reading = Reading(faults=[{"code": "TONER-LOW-BLACK", "severity": "warning", "message": ""}])
    assert parse_message(HealthSample, SampleBuilder("m-1").build(reading)).status == "warning"
