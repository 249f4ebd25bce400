"""The operator's command line against a real server: login, then the fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", mosquitto.url) as process:
        yield process


def _cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    env["FIELDLINK_CREDENTIALS"] = str(tmp_path / "credentials.json")
    return subprocess.run(
        [sys.executable, "-m", "shared", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_login_then_devices(tmp_path: Path, server: ServerProcess) -> None:
    server.register("mfp-cli-1")
    before = _cli(tmp_path, "devices")
    assert before.returncode != 0
    assert "not logged in" in before.stderr

    wrong = _cli(tmp_path, "login", "--server", server.url, "--user", "admin", stdin="nope\n")
    assert wrong.returncode != 0
    assert "wrong user name or password" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1

    done = _cli(
        tmp_path, "login", "--server", server.url, "--user", "admin", stdin="admin-password\n"
    )
    assert done.returncode == 0, done.stderr
    assert "logged in" in done.stdout
    credentials = tmp_path / "credentials.json"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert "admin-password" not in credentials.read_text()

    table = _cli(tmp_path, "devices")
    assert table.returncode == 0, table.stderr
    assert "mfp-cli-1" in table.stdout
    assert "1 of 1 devices" in table.stdout
    found = _cli(tmp_path, "devices", "555 0100", "--json")
    assert [d["id"] for d in json.loads(found.stdout)["items"]] == ["mfp-cli-1"]
    offline = _cli(tmp_path, "devices", "--online")
    assert "0 of 0 devices" in offline.stdout


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    done = _cli(tmp_path, "login", "--server", "http://127.0.0.1:1", "--user", "x", stdin="y\n")
    assert done.returncode != 0
    assert done.stderr.startswith("error: cannot reach http://127.0.0.1:1")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_manager_runs_kpi_and_incident_export_over_the_api(
    tmp_path: Path, server: ServerProcess
) -> None:
    """No configuration here (a manager's laptop): the logged-in server answers."""
    made = server.cli("user", "add", "maria", "--role", "manager", stdin="maria-password\n")
    assert made.returncode == 0, made.stderr
    no_login = _cli(tmp_path, "kpi")
    assert no_login.returncode != 0
    assert no_login.stderr.startswith("error: no configuration found")
    done = _cli(
        tmp_path, "login", "--server", server.url, "--user", "maria", stdin="maria-password\n"
    )
    assert done.returncode == 0, done.stderr
    report = _cli(tmp_path, "kpi", "--by", "month")
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("KPIs of incidents closed from")
    as_json = _cli(tmp_path, "kpi", "--json")
    assert "incidents_closed" in json.loads(as_json.stdout)["total"]
    exported = _cli(tmp_path, "incident", "export", "--out", str(tmp_path / "incidents.csv"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "incidents.csv").read_text().startswith("id,")


def test_passwd_changes_ones_password(tmp_path: Path, server: ServerProcess) -> None:
    made = server.cli("user", "add", "otto", "--role", "operator", stdin="otto-password\n")
    assert made.returncode == 0, made.stderr
    done = _cli(
        tmp_path, "login", "--server", server.url, "--user", "otto", stdin="otto-password\n"
    )
    assert done.returncode == 0, done.stderr
    wrong = _cli(tmp_path, "passwd", stdin="not-it-at-all\nnew-password-1\n")
    assert wrong.returncode != 0
    assert len(wrong.stderr.strip().splitlines()) == 1
    changed = _cli(tmp_path, "passwd", stdin="otto-password\nnew-password-1\n")
    assert changed.returncode == 0, changed.stderr
    old = _cli(tmp_path, "login", "--server", server.url, "--user", "otto", stdin="otto-password\n")
    assert old.returncode != 0
    new = _cli(
        tmp_path, "login", "--server", server.url, "--user", "otto", stdin="new-password-1\n"
    )
    assert new.returncode == 0, new.stderr


def test_login_asks_for_the_two_factor_code(tmp_path: Path, server: ServerProcess) -> None:
    import time

    import httpx2 as httpx
    import pyotp

    made = server.cli("user", "add", "tina", "--role", "operator", stdin="tina-password\n")
    assert made.returncode == 0, made.stderr
    token = httpx.post(
        f"{server.url}/api/v1/auth/token",
        data={"username": "tina", "password": "tina-password"},
        timeout=10,
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    begun = httpx.post(
        f"{server.url}/api/v1/auth/mfa", json={"password": "tina-password"}, headers=headers
    )
    totp = pyotp.TOTP(begun.json()["secret"])
    confirmed = httpx.post(
        f"{server.url}/api/v1/auth/mfa/confirm", json={"code": totp.now()}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    login = ["login", "--server", server.url, "--user", "tina"]
    wrong = _cli(tmp_path, *login, "--otp", "000000", stdin="tina-password\n")
    assert wrong.returncode != 0
    assert "wrong two-factor code" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    # Asked for on stdin after the password (the next step's code: the first one is spent).
    code = totp.at(time.time() + 30)
    done = _cli(tmp_path, *login, stdin=f"tina-password\n{code}\n")
    assert done.returncode == 0, done.stderr
    assert "logged in" in done.stdout
    replayed = _cli(tmp_path, *login, "--otp", code, stdin="tina-password\n")
    assert replayed.returncode != 0
    assert "wrong two-factor code" in replayed.stderr


def test_an_operator_escalates_an_incident_over_the_api(
    tmp_path: Path, server: ServerProcess
) -> None:
    """From an operator's laptop: ``fieldlink incident escalate`` (one-line errors)."""
    for name in ("otto", "sara"):
        made = server.cli("user", "add", name, "--role", "operator", stdin=f"{name}-password\n")
        assert made.returncode == 0, made.stderr
    server.register("mfp-esc-1")
    incident = server.api(
        "POST", "/incidents", json={"device_id": "mfp-esc-1", "opened_at": "2026-03-02T09:00:00Z"}
    )
    done = _cli(
        tmp_path, "login", "--server", server.url, "--user", "otto", stdin="otto-password\n"
    )
    assert done.returncode == 0, done.stderr
    escalated = _cli(
        tmp_path, "incident", "escalate", str(incident["id"]), "--tier", "2", "--to", "sara",
        "--note", "reset did not help; needs a specialist",
    )  # fmt: skip
    assert escalated.returncode == 0, escalated.stderr
    assert escalated.stdout.strip() == f"incident {incident['id']}: tier 2, assignee sara"
    assert server.api("GET", f"/incidents/{incident['id']}")["assignee"] == "sara"
    entries = server.api("GET", "/audit", params={"action": "incident.escalate"})["items"]
    assert [(e["actor"], e["target"]) for e in entries] == [("otto", f"incident:{incident['id']}")]
    unknown = _cli(tmp_path, "incident", "escalate", "424242", "--tier", "2", "--note", "x")
    assert unknown.returncode != 0
    assert "no incident 424242" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    nobody = _cli(
        tmp_path, "incident", "escalate", str(incident["id"]), "--to", "nobody", "--note", "x"
    )
    assert nobody.returncode != 0
    assert "assignee: no such user" in nobody.stderr


def _support_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``fieldlink alerts|knowledge`` in process, with this checkout's commands declared."""
    from tests.fixtures.cli import declare_commands, fieldlink

    declare_commands(monkeypatch)
    done = fieldlink(*args, env={"FIELDLINK_CREDENTIALS": str(tmp_path / "credentials.json")})
    return subprocess.CompletedProcess(list(args), done.returncode, done.stdout, done.stderr)


def test_alerts_and_the_knowledge_base_over_the_api(
    tmp_path: Path, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from sqlmodel import Session

    from server.db import make_engine
    from server.models import Alert

    for name, role in (("otto", "operator"), ("maria", "manager")):
        made = server.cli("user", "add", name, "--role", role, stdin=f"{name}-password\n")
        assert made.returncode == 0, made.stderr
    server.register("mfp-al-1")
    server.register("img-al-2", device_type="imaging")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with Session(engine) as db:
        raised = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        for device_id, code, severity in (
            ("mfp-al-1", "C-7100", "critical"),
            ("img-al-2", "E-204", "warning"),
            ("mfp-al-1", "I-001", "info"),
        ):
            db.add(Alert(device_id=device_id, source="device", code=code, severity=severity,
                         message=f"{code} raised", raised_at=raised))  # fmt: skip
        db.commit()
    engine.dispose()
    done = _cli(tmp_path, "login", "--server", server.url, "--user", "maria",
                stdin="maria-password\n")  # fmt: skip
    assert done.returncode == 0, done.stderr

    listed = _support_cli(monkeypatch, tmp_path, "alerts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["SEVERITY", "DEVICE", "CUSTOMER", "CODE"]
    assert [line.split()[0] for line in lines[1:4]] == ["critical", "warning", "info"]
    assert lines[-1] == "3 of 3 open alerts"
    severe = _support_cli(monkeypatch, tmp_path, "alerts", "--severity", "warning", "--json")
    assert [a["code"] for a in json.loads(severe.stdout)["items"]] == ["C-7100", "E-204"]
    imaging = _support_cli(monkeypatch, tmp_path, "alerts", "--type", "imaging")
    assert imaging.stdout.splitlines()[-1] == "1 of 1 open alerts"
    bad = _support_cli(monkeypatch, tmp_path, "alerts", "--severity", "dire")
    assert bad.returncode != 0

    added = _support_cli(
        monkeypatch, tmp_path, "knowledge", "add", "--title", "Fuser fault C-7100",
        "--steps", "Power cycle, then reseat the fuser unit", "--code", "C-7100",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("article ")
    found = _support_cli(monkeypatch, tmp_path, "knowledge", "search", "reseat", "fuser")
    assert found.returncode == 0, found.stderr
    assert "Fuser fault C-7100" in found.stdout
    assert found.stdout.splitlines()[-1] == "1 of 1 hits"
    nothing = _support_cli(monkeypatch, tmp_path, "knowledge", "search", "--json", "toner")
    assert json.loads(nothing.stdout)["count"] == 0

    # an operator may search but not write: the API's 403 as one line
    done = _cli(tmp_path, "login", "--server", server.url, "--user", "otto",
                stdin="otto-password\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused = _support_cli(
        monkeypatch, tmp_path, "knowledge", "add", "--title", "t", "--steps", "s"
    )
    assert refused.returncode != 0
    assert refused.stderr.startswith("error: ")
    assert len(refused.stderr.strip().splitlines()) == 1
    empty = _support_cli(monkeypatch, tmp_path, "knowledge", "search", " ")
    assert empty.returncode != 0
    assert empty.stderr.strip() == "error: give the words to search for"
