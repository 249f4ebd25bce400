"""``fieldlink kpi --voice`` on a server's database: the demo's answers by resolution."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from server.db import create_schema, make_engine
from server.incidents.demo import seed_demo_incidents
from server.models import Device
from server.surveys.demo import seed_demo_surveys
from tests.fixtures.cli import fieldlink


def test_kpi_voice_by_resolution(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{database}")
    create_schema(engine)
    now = datetime(2026, 6, 15, tzinfo=UTC)
    with Session(engine) as session:
        device = Device(id="mfp-a", serial="S", model="M", type="mfp", customer="C")
        session.add(device)
        session.commit()
        seed_demo_incidents(session, [device], now=now, per_month=40)
        seed_demo_surveys(session, now=now)
    engine.dispose()
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndatabase_url = "sqlite:///{database}"\nstate_dir = "{tmp_path}"\n'
    )
    window = ("--from", "2025-07-01", "--to", "2026-07-01")
    table = fieldlink("kpi", "--voice", *window, "--by", "resolution", "-c", str(config))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "includes demo data" in lines[0]
    assert any(line.startswith("remote ") for line in lines)
    assert lines[-1].startswith("total")
    answer = fieldlink("kpi", "--voice", *window, "--by", "resolution", "--json", "-c", str(config))
    report = json.loads(answer.stdout)
    by = {g["key"]: g for g in report["groups"]}
    assert by["remote"]["nps"] > by["dispatch"]["nps"]
    bad = fieldlink("kpi", "--voice", "--by", "colour", "-c", str(config))
    assert bad.returncode != 0
    assert "--by must be one of" in bad.stderr
