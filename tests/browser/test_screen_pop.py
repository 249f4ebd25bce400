"""The CTI screen-pop in a real browser (issue 14): a phone system opens /desk/call on the
operator's screen; the caller's device (or customer, or "no match") comes up with a banner,
and an incident opened from the banner carries the call's answer time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console, axe_violations, login, shoot
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_an_incoming_call_pops_up_the_callers_device(
    page: Any, console: Console, artifacts: Path
) -> None:
    login(page, console, "operator")
    # demo-0001's phone, written as the phone system sends it; the PBX's own call id.
    page.goto(
        console.url + "/desk/call?" + urlencode({"ani": "+44 20 7946 0001", "call_id": "pbx-9"})
    )
    page.wait_for_url(re.compile(r".*/devices/demo-0001\?call=\d+$"))
    banner = page.locator("#call-banner")
    expect(banner).to_be_visible()
    expect(page.locator("#call-ani")).to_have_text("+442079460001")
    shoot(page, artifacts, "screen-pop-device", full_page=False)
    banner.get_by_role("button", name="Open incident from this call").click()
    expect(banner).to_contain_text("opened from this call")
    call_id = int(page.url.rsplit("=", 1)[1])
    with console.api("operator") as api:
        call = api.get(f"/api/v1/calls/{call_id}").json()
        assert (call["external_id"], call["operator"]) == ("pbx-9", "operator")
        incident = api.get(f"/api/v1/incidents/{call['incident_id']}").json()
    assert incident["device_id"] == "demo-0001"
    assert incident["channel"] == "phone"
    assert incident["answered_at"] == call["answered_at"].replace("+00:00", "Z")


def test_a_customer_with_several_devices_and_an_unknown_caller(
    page: Any, console: Console, artifacts: Path, axe_source: str
) -> None:
    with console.api("manager") as api:
        created = api.post(
            "/api/v1/customers",
            json={
                "number": "8800",
                "name": "Kanto Imaging Center",
                "country": "JP",
                "contacts": [{"name": "Front desk", "phone": "03-5555-0100", "language": "ja"}],
            },
        )
        assert created.status_code == 201, created.text
    with console.api("admin") as api:
        for serial in ("K1", "K2"):
            answer = api.post(
                "/api/v1/devices",
                json={
                    "serial": serial,
                    "model": "CT",
                    "type": "imaging",
                    "customer_number": "8800",
                },
            )
            assert answer.status_code == 201, answer.text
    login(page, console, "operator")
    # The front desk's number the Japanese way; it is the customer's, not one device's.
    page.goto(console.url + "/desk/call?" + urlencode({"ani": "+81 3 5555 0100"}))
    page.wait_for_url(re.compile(r".*/customers/8800\?call=\d+$"))
    expect(page.locator("#call-banner")).to_contain_text("choose the device")
    expect(page.locator("#customer-devices")).to_contain_text("imaging-k1")
    expect(page.locator("#customer-devices")).to_contain_text("imaging-k2")
    shoot(page, artifacts, "screen-pop-customer", full_page=False)
    assert axe_violations(page, axe_source) == []
    page.locator("#customer-devices").get_by_role("link", name="imaging-k2").click()
    page.wait_for_url(re.compile(r".*/devices/imaging-k2\?call=\d+$"))
    expect(page.get_by_role("button", name="Open incident from this call")).to_be_visible()

    page.goto(console.url + "/desk/call?" + urlencode({"ani": "+1 202 555 0199"}))
    page.wait_for_url(re.compile(r".*/desk\?call=\d+$"))
    expect(page.locator("#call-nomatch")).to_have_text("No device or customer matches this number.")
    shoot(page, artifacts, "screen-pop-no-match", full_page=False)
    page.goto(console.url + "/customers")
    expect(page.get_by_role("link", name="8800")).to_be_visible()
    assert axe_violations(page, axe_source) == []


def test_the_incident_forms_record_answer_down_dispatch_and_arrival_times(
    page: Any, console: Console
) -> None:
    login(page, console, "operator")
    page.goto(console.url + "/devices/demo-0002")
    page.get_by_role("button", name="Open incident").click()
    dialog = page.locator("#incident-dialog")
    expect(dialog.get_by_label("Call answered at (empty: not answered yet)")).not_to_have_value("")
    dialog.get_by_label("Symptom").fill("server does not boot")
    dialog.get_by_label("Device down since (empty: now)").fill("2026-01-05T07:30")
    dialog.get_by_role("button", name="Open incident").click()
    with console.api("operator") as api:

        def recorded() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = api.get(
                "/api/v1/incidents", params={"device_id": "demo-0002", "state": "open"}
            ).json()["items"]
            return [i for i in items if i["symptom"] == "server does not boot"]

        wait_until(lambda: bool(recorded()), timeout=15, interval=0.2)
        [opened] = recorded()
    assert opened["symptom"] == "server does not boot"
    assert opened["answered_at"] is not None
    assert opened["down_at"] != opened["opened_at"]

    page.goto(console.url + "/incidents?state=open&device_id=demo-0002")
    page.locator(f'[data-close-incident="{opened["id"]}"]').click()
    close = page.locator("#close-incident")
    close.get_by_label("Resolution").select_option("dispatch")
    close.get_by_label("Engineer dispatched at (a dispatch)").fill("2026-01-05T09:00")
    close.get_by_label("Engineer arrived at (a dispatch)").fill("2026-01-05T11:15")
    close.get_by_label("Device back in service at").fill("2026-01-05T12:00")
    close.get_by_role("button", name="Close incident").click()
    with console.api("operator") as api:
        wait_until(
            lambda: api.get(f"/api/v1/incidents/{opened['id']}").json()["state"] == "closed",
            timeout=15,
            interval=0.2,
        )
        closed = api.get(f"/api/v1/incidents/{opened['id']}").json()
    assert closed["state"] == "closed"
    assert closed["resolution"] == "dispatch"
    assert closed["dispatched_at"] is not None
    assert closed["engineer_arrived_at"] is not None


def test_a_manager_registers_an_unknown_caller_from_the_banner(
    page: Any, console: Console, axe_source: str
) -> None:
    login(page, console, "manager")
    page.goto(console.url + "/desk/call?" + urlencode({"ani": "+1 206 555 0188"}))
    page.wait_for_url(re.compile(r".*/desk\?call=\d+$"))
    page.get_by_role("link", name="Register the customer?").click()
    page.wait_for_url(re.compile(r".*/customers#new$"))
    dialog = page.locator("#new-customer")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Contact phone")).to_have_value("+12065550188")
    assert axe_violations(page, axe_source) == []
    dialog.get_by_label("Customer number (what callers key in)").fill("9100")
    dialog.get_by_label("Name", exact=True).fill("Rainier Dental")
    dialog.get_by_label("Country (ISO code: local phone numbers are read in it)").fill("US")
    dialog.get_by_label("Contact name").fill("Front desk")
    dialog.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r".*/customers/9100$"))
    expect(page.locator("#contacts")).to_contain_text("+12065550188")
    # The next call from that number finds the new customer.
    page.goto(console.url + "/desk/call?" + urlencode({"ani": "(206) 555-0188"}))
    page.wait_for_url(re.compile(r".*/desk\?call=\d+$"))  # no default region: not a match yet
    page.goto(console.url + "/desk/call?" + urlencode({"ani": "+1 206-555-0188"}))
    page.wait_for_url(re.compile(r".*/customers/9100\?call=\d+$"))
