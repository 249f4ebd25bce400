"""The console in a real browser: ``fieldlink demo`` (a real server, Mosquitto and simulated
devices that accept sessions) driven by Playwright through Debian's Chromium.

One demo serves a whole module; each test logs in on a fresh browser context.
Playwright's own browser downloads are never used: ``/usr/bin/chromium`` is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import wait_until

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "server" / "web" / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"
#: The widths every page must work at: a desktop and a tablet.
WIDTHS = (1280, 768)


@dataclass
class Console:
    """A running ``fieldlink demo``: its URL, data folder and the printed logins."""

    url: str
    directory: Path
    passwords: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def seed_history(self, device_id: str, days: int = 30) -> None:
        """Hourly rollups for a month, as ingest would have written them over time."""
        import math

        from sqlalchemy import create_engine
        from sqlalchemy.dialects.sqlite import insert

        from server.models import TelemetryRollup

        engine = create_engine(f"sqlite:///{self.directory / 'fieldlink.db'}")
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        rows = []
        for hour in range(days * 24, 0, -1):
            bucket = now - timedelta(hours=hour)
            day = math.sin(2 * math.pi * (bucket.hour - 9) / 24)
            for metric, base, swing in (
                ("cpu_percent", 18.0, 14.0),
                ("mem_percent", 46.0, 6.0),
                ("disk_percent:/", 35.0 + 6.0 * (days * 24 - hour) / (days * 24), 0.2),
                ("mfp.toner_black_percent", 90.0 - 60.0 * (days * 24 - hour) / (days * 24), 0.1),
            ):
                mean = max(0.0, base + swing * day)
                rows.append(
                    {
                        "device_id": device_id,
                        "metric": metric,
                        "bucket": bucket,
                        "count": 360,
                        "min": max(0.0, mean - swing / 3 - 1),
                        "max": mean + swing / 3 + 1,
                        "sum": mean * 360,
                    }
                )
        table = TelemetryRollup.__table__  # type: ignore[attr-defined]
        with engine.begin() as connection:
            # Ingest may have rolled up a recent hour already: keep its row.
            connection.execute(insert(table).on_conflict_do_nothing(), rows)
        engine.dispose()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_all_online(url: str, password: str) -> None:
    """Wait until every simulated device has reported (the pages show them online)."""
    import httpx2 as httpx

    answer = httpx.post(
        f"{url}/api/v1/auth/token", data={"username": "admin", "password": password}, timeout=10
    )
    answer.raise_for_status()
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def all_online() -> bool:
        fleet = httpx.get(f"{url}/api/v1/devices", headers=headers, timeout=10).json()
        return bool(fleet["items"]) and all(d["online"] and d["status"] for d in fleet["items"])

    wait_until(all_online, timeout=60, interval=0.25)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """``fieldlink demo`` with three simulated devices, for one test module."""
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium (make system-deps installs it)")
    directory = tmp_path_factory.mktemp("console")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["FIELDLINK_SSH_GATEWAY_PORT"] = "0"  # a free port: 2222 may be taken
    log = directory / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared", "demo", "--dir", str(directory / "demo"),
             "--port", "0", "--interval", "1", "--devices", "3"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until(
            lambda: "login:    admin" in log.read_text() or process.poll() is not None,
            timeout=90,
            interval=0.2,
        )
        text = log.read_text()
        url = re.search(r"console:\s+(http://\S+)/", text)
        assert url, text
        passwords = dict(re.findall(r"login:\s+(\w+) / (\S+)", text))
        assert set(passwords) >= {"operator", "manager", "admin"}, text
        _wait_all_online(url.group(1), passwords["admin"])
        yield Console(url.group(1), directory / "demo", passwords, log, process)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), shared by a module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core from npm (``make web-assets`` installs it)."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run `make web-assets`")
    return AXE.read_text()


def login(page: Any, console: Console, user: str) -> None:
    """Log in through the form as one of the demo's users."""
    page.goto(console.url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(console.passwords[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/desk$"))


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """The serious and critical axe-core violations of the page as it is now."""
    page.add_script_tag(content=source)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def shoot(page: Any, artifacts: Path, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot (of the whole page, or of what the window shows) under tests/artifacts/."""
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=full_page)
