"""Issue 14 in a real browser: a fault's incident on the desk before anyone calls, its
similar past cases, and the one-click close once the fault cleared."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine
from sqlmodel import Session, select

from server.ingest.incidents import apply_fault_incidents
from server.models import Device, Incident
from tests.fixtures.console import Console, axe_violations, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DEVICE = "demo-0001"
CODE = "SC-999"


def _seed(console: Console) -> int:
    """Three past cases of CODE on the device's model, and an open one its fault opened."""
    engine = create_engine(f"sqlite:///{console.directory / 'fieldlink.db'}")
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        with Session(engine) as db:
            device = db.get(Device, DEVICE)
            assert device is not None
            for day, (resolution, hours, note) in enumerate(
                (
                    ("remote", 1.0, "Reset the controller board remotely"),
                    ("remote", 2.0, "Reset the controller board remotely"),
                    ("dispatch", 20.0, "Replaced controller board (part CB-7)"),
                ),
                start=1,
            ):
                down = now - timedelta(days=day)
                db.add(
                    Incident(
                        device_id=DEVICE, device_type=device.type, opened_at=down, down_at=down,
                        restored_at=down + timedelta(hours=hours),
                        closed_at=down + timedelta(hours=hours), resolution=resolution,
                        error_code=CODE, resolution_note=note,
                    )
                )  # fmt: skip
            db.commit()
        row: dict[str, Any] = {
            "device_id": DEVICE, "source": "device", "code": CODE, "metric": None,
            "severity": "critical", "message": "Controller board error",
            "raised_at": now - timedelta(minutes=30), "cleared_at": None, "open": True,
        }  # fmt: skip
        with engine.begin() as conn:
            apply_fault_incidents(conn, [row], [(DEVICE, CODE, now - timedelta(minutes=5))])
        with Session(engine) as db:
            opened = db.exec(
                select(Incident).where(Incident.error_code == CODE, Incident.channel == "alert")
            ).one()
            assert opened.id is not None
            return opened.id
    finally:
        engine.dispose()


def test_a_fault_incident_shows_its_past_cases_and_closes_in_one_click(
    page: Any, console: Console, artifacts: Path, axe_source: str
) -> None:
    incident_id = _seed(console)
    login(page, console, "operator")
    page.goto(console.url + "/desk")
    card = page.locator(f'li.alert-incident[data-incident="{incident_id}"]')
    expect(card).to_contain_text(CODE)
    expect(card).to_contain_text("Fault cleared")
    similar = card.locator("[data-similar-incident]")
    expect(similar).to_contain_text(
        f"3 past cases of {CODE} on this model: 67 % fixed remotely, median 1.5 h"
    )
    expect(similar).to_contain_text("top fixes: Reset the controller board remotely (2\u00d7)")
    shoot(page, artifacts, "desk-alert-incidents")
    assert axe_violations(page, axe_source) == []

    page.goto(console.url + f"/devices/{DEVICE}")
    expect(page.locator(f'[data-similar-incident="{incident_id}"]')).to_contain_text("3 past cases")
    page.goto(console.url + "/desk")
    card.get_by_role("button", name="remote").click()
    expect(page.locator("#toast")).to_contain_text(f"Incident #{incident_id} closed (remote)")
    page.wait_for_load_state("load")
    expect(page.locator(f'li.alert-incident[data-incident="{incident_id}"]')).to_have_count(
        0, timeout=10_000
    )
    page.goto(console.url + f"/incidents?state=closed&device_id={DEVICE}")
    row = page.locator("tbody tr").filter(
        has=page.locator("td:first-child", has_text=re.compile(rf"^{incident_id}$"))
    )
    expect(row).to_contain_text("remote")
