"""``fieldlink customer|call ...`` on a server's database (SQLite and PostgreSQL).

They run in process through the real command tree. The entry points this branch
declares in pyproject.toml are added to the installed ones when an editable
install predates them, so the tests see the commands a fresh install has.
"""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import shared.cli
from tests.fixtures.cli import fieldlink
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def _declared_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        shared.cli.GROUP
    ]
    installed = shared.cli.entry_points  # type: ignore[attr-defined]

    def with_declared(*, group: str) -> list[EntryPoint]:
        found = {ep.name: ep for ep in installed(group=group)}
        for name, value in declared.items():
            found.setdefault(name, EntryPoint(name, value, group))
        return list(found.values())

    monkeypatch.setattr(shared.cli, "entry_points", with_declared)


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndatabase_url = "{database_url}"\nstate_dir = "{tmp_path}"\n'
        'phone_default_region = "JP"\n'
    )
    return path


def _run(config: Path, *args: str, stdin: str = "") -> Any:
    return fieldlink(*args, "--config", str(config), stdin=stdin)


def test_customer_add_list_show_and_the_call_lookup(config: Path) -> None:
    added = _run(
        config,
        "customer", "add", "4711", "--name", "Sakura Clinic", "--country", "JP",
        "--contact", "Dr. Tanaka,03-1234-5678,t@sakura.example,ja", "--site", "Osaka:JP",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "contact Dr. Tanaka: +81312345678" in added.stdout
    listed = _run(config, "customer", "list", "--json")
    assert json.loads(listed.stdout)["count"] == 1
    shown = _run(config, "customer", "show", "4711")
    assert "site Osaka (JP)" in shown.stdout
    # The number as a Japanese phone system sends it: read in phone_default_region.
    found = _run(config, "call", "lookup", "0312345678", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["customer"]["number"] == "4711"
    calls = _run(config, "call", "list")
    assert calls.stdout.strip() == "0 call(s)"


def test_mistakes_are_one_line(config: Path) -> None:
    for args, message in (
        (["customer", "add", "1", "--name", "X", "--contact", "A,12"], "contacts[0].phone"),
        (["customer", "add", "../1", "--name", "X"], "number"),
        (["customer", "show", "404"], "no customer '404'"),
        (["call", "lookup", "not a number"], "ani"),
    ):
        done = _run(config, *args)
        assert done.returncode != 0, args
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_csv_imports_name_every_bad_line(config: Path, tmp_path: Path) -> None:
    good = tmp_path / "customers.csv"
    good.write_text("number,name,country,contact_name,contact_phone\n7,Acme,DE,Ann,030 1234567\n")
    done = _run(config, "customer", "import", str(good))
    assert done.returncode == 0, done.stderr
    assert "1 customers created" in done.stdout
    devices = "serial,model,type,customer_number,contact_phone\nS1,M,mfp,7,030 7654321\n"
    done = _run(config, "customer", "import-devices", "-", stdin=devices)
    assert done.returncode == 0, done.stderr
    assert "1 devices registered" in done.stdout
    bad = "serial,model,type,customer_number\nS2,M,mfp,7\nS3,M,toaster,8\nS1,M,mfp,7\n"
    done = _run(config, "customer", "import-devices", "-", stdin=bad)
    assert done.returncode == 2  # bad input
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "error: 2 bad row(s) in -: nothing imported"
    assert any(line.startswith("-:line 3, type") for line in lines)
    assert any(line.startswith("-:line 4, id") and "already exists" in line for line in lines)
    exported = _run(config, "customer", "export")
    assert exported.stdout.splitlines()[1].startswith("7,Acme,DE,,Ann,'+49301234567")
    round_trip = _run(config, "customer", "import", "-", stdin=exported.stdout)
    assert "0 customers created, 1 already on record" in round_trip.stdout, round_trip.stderr
    found = json.loads(_run(config, "call", "lookup", "+49 30 7654321", "--json").stdout)
    assert found["devices"] == ["mfp-s1"]


@pytest.mark.integration
def test_an_operator_looks_customers_and_callers_up_over_the_api(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """No configuration here (an operator's laptop): the logged-in server answers."""
    import httpx2 as httpx

    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with ServerProcess(tmp_path, database, mosquitto.url) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        made = httpx.post(
            f"{server.url}/api/v1/customers",
            json={"number": "42", "name": "Acme", "country": "DE",
                  "contacts": [{"name": "Ann", "phone": "030 1234567"}]},
            headers=headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        env = {"FIELDLINK_CREDENTIALS": str(tmp_path / "credentials.json")}
        done = fieldlink(
            "login", "--server", server.url, "--user", "admin",
            stdin="admin-password\n", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = fieldlink("call", "lookup", "+49 30 1234567", "--json", env=env, cwd=tmp_path)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["customer"]["number"] == "42"
        listed = fieldlink("call", "list", env=env, cwd=tmp_path)
        assert listed.stdout.strip() == "0 call(s)"
        shown = fieldlink("customer", "show", "42", env=env, cwd=tmp_path)
        assert "contact Ann: +49301234567" in shown.stdout, shown.stderr
        customers = fieldlink("customer", "list", "--json", env=env, cwd=tmp_path)
        assert json.loads(customers.stdout)["count"] == 1
        missing = fieldlink("customer", "show", "404", env=env, cwd=tmp_path)
        assert missing.returncode == 3  # not found
        assert "no customer '404'" in missing.stderr
        bad = fieldlink("call", "lookup", "12", env=env, cwd=tmp_path)
        assert bad.returncode == 2  # bad input (422)
        assert "ani" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
