"""The package as a site installs it: the sdist and wheel of ``make dist``, installed from the
lock into a fresh virtual environment, serve a working console and API docs off-line.

The checkout is never on the installed server's path: it runs from another folder, so
whatever it serves came out of the wheel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.managed import ManagedProcess
from tests.fixtures.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "wheel-admin-pass-1"


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built (through an sdist) from the checkout."""
    dist = tmp_path_factory.mktemp("wheel") / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
    wheels = list(dist.glob("fieldlink-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the locked server dependencies and the wheel built from an sdist."""
    env_dir = tmp_path_factory.mktemp("server-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    locked = [*pip, "install", "--require-hashes", "--no-deps", "-r"]
    _run([*locked, str(ROOT / "requirements-server.txt")])
    # The agent's lock too: the test enrolls a device with the installed command.
    _run([*locked, str(ROOT / "requirements-agent.txt")])
    _run([*pip, "install", "--no-deps", str(wheel)])
    _run([*pip, "check"])
    return env_dir


@pytest.fixture(scope="module")
def client_installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the client's lock (no fastapi, sqlmodel...) and the wheel."""
    env_dir = tmp_path_factory.mktemp("client-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", "--require-hashes", "--no-deps", "-r",
          str(ROOT / "requirements-client.txt")])  # fmt: skip
    _run([*pip, "install", "--no-deps", str(wheel)])
    _run([*pip, "check"])
    return env_dir


@pytest.fixture(scope="module")
def served(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The installed ``fieldlink server run`` with a config from ``server init-config``."""
    site = tmp_path_factory.mktemp("site")
    fieldlink = str(installed / "bin" / "fieldlink")
    port = free_port()
    config = site / "etc" / "server.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLINK_", "PYTHON"))}
    env.update(FIELDLINK_SSH_GATEWAY_PORT="-1", FIELDLINK_HTTP_PORT=str(port))
    run = {"cwd": site, "env": env}
    _run([fieldlink, "server", "init-config", "--out", str(config),
          "--public-url", f"http://127.0.0.1:{port}",
          "--database-url", f"sqlite:///{site / 'fieldlink.db'}",
          "--state-dir", str(site / "state")], **run)  # fmt: skip
    _run([fieldlink, "ca", "init", "--config", str(config)], **run)
    _run([fieldlink, "user", "add", "admin", "--role", "admin", "--config", str(config)],
         input=PASSWORD + "\n", **run)  # fmt: skip
    added = _run([fieldlink, "device", "add", "--serial", "WH-1", "--model", "MP 6055",
                  "--type", "mfp", "--customer", "Wheel Ltd", "--json", "--config", str(config)],
                 **run)  # fmt: skip
    token = json.loads(added.stdout)["enrollment_token"]
    server = ManagedProcess("server", site / "server.log", stop_timeout=20)
    server.spawn([fieldlink, "server", "run", "--config", str(config)], **run)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        server.wait_ready(ready, timeout=60, interval=0.25)
        # A device enrolls with the same installed command (it is never started here).
        _run([fieldlink, "agent", "enroll", "--server", url, "--token", token,
              "--dir", str(site / "agent")], **run)  # fmt: skip
        yield url
    finally:
        server.stop()


def test_the_installed_server_runs_from_the_wheel_not_the_checkout(installed: Path) -> None:
    where = _run(
        [str(installed / "bin" / "python"), "-c", "import server; print(server.__file__)"],
        cwd=installed,
    ).stdout
    assert str(installed) in where
    assert str(ROOT) not in where


def test_the_console_and_api_docs_work_offline(served: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail("this test needs Debian's chromium (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    token = httpx.post(
        f"{served}/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    device = httpx.get(f"{served}/api/v1/devices", headers=headers).json()["items"][0]["id"]
    opened = httpx.post(
        f"{served}/api/v1/devices/{device}/sessions", headers=headers, json={"reason": "wheel"}
    )
    assert opened.status_code in (200, 201), opened.text
    session = opened.json()["id"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page()
        errors: list[str] = []
        outside: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def only_this_server(route: Any) -> None:
            if route.request.url.startswith(served):
                route.continue_()
            else:  # a CDN: the center may have no internet access
                # ReDoc's "powered by" footer links its logo from its CDN: a missing
                # picture, nothing the page needs.
                if route.request.resource_type != "image":
                    outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_this_server)
        page.goto(f"{served}/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r".*/desk$"))

        page.goto(f"{served}/devices/{device}")
        assert page.evaluate("typeof uPlot") == "function"
        page.goto(f"{served}/sessions/{session}")
        assert page.evaluate("typeof Terminal") == "function"
        assert page.evaluate("typeof AsciinemaPlayer") == "object"

        page.goto(f"{served}/docs")
        page.wait_for_selector(".swagger-ui .title", timeout=20_000)
        assert "fieldlink" in page.inner_text(".swagger-ui .title")
        page.goto(f"{served}/redoc")
        page.wait_for_selector("redoc h1, [role=navigation]", timeout=20_000)
        browser.close()
    assert errors == []
    assert outside == []


def test_the_operator_client_works_with_the_client_extra_alone(
    client_installed: Path, served: str, tmp_path: Path
) -> None:
    python = str(client_installed / "bin" / "python")
    for module in ("fastapi", "sqlmodel", "sqlalchemy", "uvicorn", "asyncssh", "cryptography"):
        absent = subprocess.run(
            [python, "-c", f"import {module}"], capture_output=True, check=False
        )
        assert absent.returncode != 0, f"{module} is installed in the client's venv"
    fieldlink = str(client_installed / "bin" / "fieldlink")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDLINK_", "PYTHON"))}
    env["FIELDLINK_CREDENTIALS"] = str(tmp_path / "credentials.json")
    run = {"cwd": tmp_path, "env": env}
    _run([fieldlink, "login", "--server", served, "--user", "admin"], input=PASSWORD + "\n", **run)
    listed = _run([fieldlink, "devices", "--json"], **run)
    assert [d["serial"] for d in json.loads(listed.stdout)["items"]] == ["WH-1"]
    # A manager's figures and the incidents export over the API, with no server installed.
    report = _run([fieldlink, "kpi", "--json"], **run)
    assert json.loads(report.stdout)["total"]["incidents_closed"] == 0
    exported = _run([fieldlink, "incident", "export"], **run)
    assert exported.stdout.startswith("id,")
    center = subprocess.run(
        [fieldlink, "user", "list"], capture_output=True, text=True, check=False, **run
    )
    assert center.returncode == 6  # the server extra is not installed
    assert "pip install 'fieldlink[server]'" in center.stderr
