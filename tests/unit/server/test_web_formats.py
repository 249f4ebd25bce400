"""How the console words a device's state (issue 17): revoked, offline and why, stale health,
a skewed clock; each is a badge of its own and only a live device's health is green."""

from __future__ import annotations

from typing import Any

import pytest

from server.web.templating import device_badges


def _device(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "online": True, "online_reason": "online", "revoked_at": None, "status": "ok",
        "last_seen": "2026-01-01T00:00:00Z", "clock_skewed": False, "clock_offset_s": 0.2,
    }  # fmt: skip
    return base | fields


def _texts(device: dict[str, Any]) -> list[str]:
    return [b["text"] for b in device_badges(device)]


def test_a_live_device_is_online_and_its_health_is_current() -> None:
    badges = device_badges(_device())
    assert [b["cls"] for b in badges] == ["online", "health-ok"]


def test_a_revoked_device_never_shows_a_green_ok() -> None:
    badges = device_badges(_device(online=False, online_reason="revoked", revoked_at="x"))
    assert [b["text"] for b in badges] == ["revoked", "last: ok"]
    assert "health-ok" not in {b["cls"] for b in badges}


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ("shutdown", "offline · shut down"),
        ("connection_lost", "offline · connection lost"),
        ("silent", "offline · silent (no report)"),
        ("gateway_offline", "offline · its gateway is offline"),
        ("something_new", "offline"),
    ],
)
def test_offline_says_why(reason: str, text: str) -> None:
    assert _texts(_device(online=False, online_reason=reason)) == [text, "last: ok"]


def test_a_device_that_never_connected() -> None:
    fresh = _device(online=False, online_reason=None, last_seen=None, status=None)
    assert _texts(fresh) == ["offline · never connected", "no data"]


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (75.0, "clock 75 s ahead"),
        (-400.0, "clock 7 min behind"),
        (3 * 3600 + 300, "clock 3 h 5 min ahead"),
    ],
)
def test_a_skewed_clock_has_its_own_badge(offset: float, text: str) -> None:
    badges = device_badges(_device(clock_skewed=True, clock_offset_s=offset))
    assert badges[-1]["cls"] == "skew"
    assert badges[-1]["text"] == text


def test_times_are_time_elements_with_the_utc_text() -> None:
    from datetime import UTC, datetime

    from server.web.templating import _when

    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert str(_when(moment)) == (
        '<time datetime="2026-03-04T05:06:07Z" title="2026-03-04 05:06 UTC">'
        "2026-03-04 05:06 UTC</time>"
    )
    assert str(_when(None)) == "—"
    assert str(_when(None, id="last-seen")) == '<time id="last-seen">—</time>'
    assert str(_when("<script>")) == "&lt;script&gt;"
