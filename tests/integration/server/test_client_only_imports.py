"""The commands that run over the API import none of the server's dependencies.

``fieldlink kpi`` and ``fieldlink incident export`` fall back to the API where
only ``fieldlink[client]`` is installed (tests/integration/test_wheel.py runs
them there); the server's modules come in only where a database is opened.
"""

from __future__ import annotations

import subprocess
import sys

#: Installed by ``fieldlink[server]``, not by ``fieldlink[client]``.
SERVER_ONLY = (
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "psycopg",
    "argon2",
    "jinja2",
    "aiomqtt",
    "paho",
    "asyncssh",
    "prometheus_client",
    "cryptography",
)


def _loaded_after(statement: str) -> list[str]:
    probe = (
        f"{statement}\nimport sys\n"
        f"print(','.join(m for m in {SERVER_ONLY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_kpi_and_incident_commands_and_the_report_load_no_server_dependency() -> None:
    statement = (
        "import server.cli.kpi, server.cli.incidents, server.kpi.report\n"
        "from server.cli.kpi import kpi_command\n"
        "from server.cli.incidents import incident_app\n"
        "import typer.main\n"
        "typer.main.get_command(incident_app)\n"
    )
    assert _loaded_after(statement) == []


def test_the_database_side_does_load_them() -> None:
    # the probe would pass vacuously if the module names were wrong
    loaded = _loaded_after("import server.kpi.compute")
    assert {"sqlalchemy", "sqlmodel"} <= set(loaded)
