"""``fieldlink kpi`` and ``fieldlink incident import|export`` on a server's database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.db import create_schema, make_engine
from tests.fixtures.cli import fieldlink
from tests.fixtures.kpi_reference import add_devices

CSV = (
    "external_id,device_id,opened_at,restored_at,closed_at,resolution,remote_session_used\n"
    "CC-1,mfp-a,2026-03-02T09:00:00Z,2026-03-02T11:00:00Z,2026-03-02T12:00:00Z,remote,true\n"
    "CC-2,server-a,2026-04-02T09:00:00Z,2026-04-02T15:00:00Z,2026-04-02T16:00:00Z,dispatch,\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    database = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{database}")
    create_schema(engine)
    add_devices(engine)
    engine.dispose()
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndatabase_url = "sqlite:///{database}"\nstate_dir = "{tmp_path}"\n')
    return path


def test_import_kpis_and_export(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(CSV)
    done = fieldlink("incident", "import", str(source), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 rows: 2 inserted, 0 updated, 0 unchanged"
    again = fieldlink("incident", "import", "-", "--config", str(config), stdin=CSV)
    assert again.stdout.strip() == "2 rows: 0 inserted, 0 updated, 2 unchanged"

    table = fieldlink(
        "kpi", "--from", "2026-01-01", "--to", "2027-01-01", "--by", "month", "-c", str(config)
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("KPIs of incidents closed from 2026-01-01 00:00 to 2027-01-01")
    assert "mfp 24.0 (configured)" in lines[1]
    march = next(line for line in lines if line.startswith("2026-03"))
    # closed 1, remote 100%, self 100%, ..., saved 24 - 2 = 22 h, 150 saved
    assert march.split()[:4] == ["2026-03", "1", "100.0", "100.0"]
    assert march.split()[-2:] == ["22", "150"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1] == "2"

    answer = fieldlink(
        "kpi", "--from", "2026-01-01", "--to", "2027-01-01", "--json", "-c", str(config)
    )
    body = json.loads(answer.stdout)
    assert body["from"] == "2026-01-01T00:00:00Z"
    assert body["total"]["dispatches"] == 1
    assert body["total"]["mttr_hours"] == pytest.approx(4.0)

    out = tmp_path / "out.csv"
    exported = fieldlink(
        "incident", "export", "--from", "2026-04-01", "--out", str(out), "--config", str(config)
    )
    assert exported.returncode == 0, exported.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("id,external_id,device_id,opened_at")
    assert len(rows) == 2
    assert ",CC-2,server-a," in rows[1]
    to_stdout = fieldlink("incident", "export", "--config", str(config))
    assert len(to_stdout.stdout.splitlines()) == 3


def test_errors_are_one_line(config: Path, tmp_path: Path) -> None:
    bad_date = fieldlink("kpi", "--from", "March", "--config", str(config))
    assert bad_date.returncode != 0
    assert bad_date.stderr.strip() == (
        "error: --from 'March' is not a date (YYYY-MM-DD) or an ISO 8601 time"
    )
    bad_group = fieldlink("kpi", "--by", "week", "--config", str(config))
    assert bad_group.stderr.strip().startswith("error: --by must be one of")
    missing = fieldlink("incident", "import", str(tmp_path / "nope.csv"), "--config", str(config))
    assert missing.returncode != 0
    assert missing.stderr.strip().startswith("error: cannot read")
    bad_rows = fieldlink(
        "incident",
        "import",
        "-",
        "--config",
        str(config),
        stdin=CSV + "CC-3,mfp-zz,2026-03-02T09:00:00Z,,,,\n",
    )
    assert bad_rows.returncode != 0
    assert bad_rows.stderr.splitlines() == [
        "-:line 4, device_id: no device 'mfp-zz'",
        "error: 1 bad row(s) in -: nothing imported",
    ]
    assert "Traceback" not in bad_rows.stderr + missing.stderr + bad_date.stderr
    nothing = fieldlink("incident", "export", "--config", str(config))
    assert len(nothing.stdout.splitlines()) == 1


def test_escalate_on_the_database_is_audited_and_refuses_bad_input(
    config: Path, tmp_path: Path
) -> None:
    from sqlmodel import Session, select

    from server import crud
    from server.cli import incidents as cli_incidents
    from server.models import AuditEntry, Incident
    from server.models.incident import HANDOVER_NOTE_MAX

    assert cli_incidents.HANDOVER_NOTE_MAX == HANDOVER_NOTE_MAX

    open_case = "CC-9,mfp-a,2026-03-02T09:00:00Z,,,,\n"
    imported = fieldlink("incident", "import", "-", "-c", str(config), stdin=CSV + open_case)
    assert imported.returncode == 0, imported.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with Session(engine) as db:
        crud.create_user(db, username="spec", role="operator", password="x" * 12)
        ids = {i.external_id: i.id for i in db.exec(select(Incident)).all()}
    done = fieldlink(
        "incident", "escalate", str(ids["CC-9"]), "--tier", "2", "--to", "spec",
        "--note", "=cmd|' /c calc'!A1 tried a reset", "-c", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"incident {ids['CC-9']}: tier 2, assignee spec"
    with Session(engine) as db:
        entry = db.exec(select(AuditEntry).where(AuditEntry.action == "incident.escalate")).one()
        assert entry.actor.startswith("cli:")
        assert json.loads(entry.details)["note"] == "=cmd|' /c calc'!A1 tried a reset"
    engine.dispose()
    for args, message in (
        (("--note", "x"), "give --tier, --to or both"),
        (("--tier", "2", "--note", "x" * 2001), "--note must be 1 to 2000"),
        (("--to", "nobody", "--note", "x"), "assignee: no such user"),
        (("--tier", "4", "--note", "x"), "--tier must be 1 (call center), 2"),
    ):
        refused = fieldlink("incident", "escalate", str(ids["CC-9"]), *args, "-c", str(config))
        assert refused.returncode != 0, args
        assert message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    closed = fieldlink(
        "incident", "escalate", str(ids["CC-1"]), "--tier", "3", "--note", "x", "-c", str(config)
    )
    assert closed.returncode != 0
    assert "is closed" in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1
    unknown = fieldlink(
        "incident", "escalate", "99999", "--tier", "3", "--note", "x", "-c", str(config)
    )
    assert "no incident 99999" in unknown.stderr
