"""Health metrics as a person reads them (issue 17): labels, units, bars, profile first."""

from __future__ import annotations

import pytest

from server.web.readings import duration, label, reading, readings, size


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("mfp.toner_black_percent", "Toner black"),
        ("mfp.paper_tray1_percent", "Paper tray 1"),
        ("imaging.dicom_peer_up:pacs", "PACS reachable"),
        ("imaging.dicom_echo_ms:worklist", "DICOM echo worklist"),
        ("server.service_up:sshd", "sshd running"),
        ("disk_percent:/", "Disk /"),
        ("disk_percent:_var_lib", "Disk /var/lib"),
        ("temp_c:coretemp.Package_id_0", "Temperature coretemp.Package id 0"),
        ("cpu_percent", "CPU"),
        ("uptime_s", "Uptime"),
        ("vendor.widget_count", "Widget count"),
    ],
)
def test_labels(name: str, text: str) -> None:
    assert label(name) == text


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("mfp.toner_black_percent", 62.0, "62 %"),
        ("cpu_percent", 3.25, "3.2 %"),
        ("uptime_s", 12 * 86_400 + 3 * 3_600 + 59, "12 d 3 h"),
        ("uptime_s", 5 * 3_600 + 20 * 60, "5 h 20 min"),
        ("uptime_s", 42, "42 s"),
        ("cache_bytes", 3.5 * 1024**2, "3.5 MiB"),
        ("cache_bytes", 1.25 * 1024**3, "1.2 GiB"),
        ("temp_c:cpu", 41.04, "41.0 °C"),
        ("imaging.dicom_peer_up:pacs", 1.0, "yes"),
        ("server.raid_degraded", 1.0, "yes"),
        ("mfp.pages_total", 123456.0, "123,456"),
        ("imaging.dicom_echo_ms:pacs", 9.87, "9.87 ms"),
    ],
)
def test_values_with_units(name: str, value: float, text: str) -> None:
    assert reading(name, value).text == text


def test_percentages_have_a_bar_and_yes_no_a_tone() -> None:
    assert reading("mfp.toner_black_percent", 62.0).percent == 62.0
    assert reading("mfp.toner_black_percent", 140.0).percent == 100.0
    assert reading("uptime_s", 10.0).percent is None
    assert reading("imaging.dicom_peer_up:pacs", 0.0).tone == "bad"
    assert reading("server.raid_degraded", 0.0).tone == "good"


def test_the_profile_comes_first() -> None:
    rows = readings(
        "mfp", {"cpu_percent": 3.0, "uptime_s": 9.0, "mfp.toner_black_percent": 62.0,
                "mfp.pages_total": 10.0, "mem_percent": 40.0},
    )  # fmt: skip
    assert [r.name for r in rows][:2] == ["mfp.pages_total", "mfp.toner_black_percent"]
    assert [r.label for r in rows][2:] == ["CPU", "Memory", "Uptime"]


def test_helpers() -> None:
    assert duration(-5) == "0 s"
    assert size(512) == "512 B"
    assert reading("note", "text as sent").text == "text as sent"


def test_a_devices_odd_names_and_values_are_shown_as_text() -> None:
    """A faulty (or hostile) device's metric names and values never become markup."""
    from server.web.templating import templates

    rows = readings("mfp", {'x"><script>alert(1)</script>': "<b>", "mfp.toner_black_percent": 62.0})
    html = templates.get_template("_health.html").render(readings=rows)
    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;" in html
    assert 'title="mfp.toner_black_percent">Toner black</td>' in html
    assert "62 %" in html


def test_the_device_page_builds_each_reading_once_in_the_pages_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The route hands the page a lazy list: nothing is built before the page renders,
    then every metric once, with the label of the page's language."""
    from server import i18n
    from server.web import readings as module
    from server.web.templating import templates

    built: list[str] = []
    real = module.reading

    def counted(name: str, value: object) -> module.Reading:
        built.append(name)
        return real(name, value)

    monkeypatch.setattr(module, "reading", counted)
    rows = module.DeviceReadings("mfp", {"mfp.toner_black_percent": 62.0, "cpu_percent": 3.0})
    assert built == []
    with i18n.use("fr"):
        html = templates.get_template("_health.html").render(readings=rows)
    assert sorted(built) == ["cpu_percent", "mfp.toner_black_percent"]
    assert 'title="mfp.toner_black_percent">Toner noir</td>' in html
    assert "62 %" in html
    assert not hasattr(module.Reading, "here")


def test_durations_in_the_readers_units() -> None:
    from server import i18n

    assert duration(21 * 86_400 + 23 * 3_600) == "21 d 23 h"
    assert duration(5 * 3_600 + 20 * 60) == "5 h 20 min"
    assert duration(240) == "4 min"
    with i18n.use("ja"):
        assert duration(21 * 86_400 + 23 * 3_600) == "21 日 23 時間"
    with i18n.use("de"):
        assert duration(5 * 3_600 + 20 * 60) == "5 Std. 20 Min."
    with i18n.use("zh"):
        assert duration(240) == "4分钟"
