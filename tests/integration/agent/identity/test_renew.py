"""Certificate renewal by the agent, against the real server app on a real HTTP port.

The server is ``server.main.create_app`` under uvicorn with a real device CA;
the device is enrolled with the agent's own ``enroll`` first. Bad answers come
from a small real HTTP server that signs what it is asked with the wrong key,
name or CA.

The part of tests/unit/agent/identity/test_renew.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from tests.fixtures.pki import self_signed


def test_the_idle_check_does_not_import_cryptography(tmp_path: Path) -> None:
    import subprocess
    import sys

    cert = tmp_path / "device.pem"
    self_signed(cert, datetime(2031, 1, 1, tzinfo=UTC))
    code = (
        "import sys, datetime\n"
        "from pathlib import Path\n"
        "from agent.identity.renew import needs_renewal\n"
        f"needs_renewal(Path({str(cert)!r}), datetime.datetime.now(datetime.UTC),"
        " datetime.timedelta(days=30))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('cryptography', 'pydantic', 'typer')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    loaded = done.stdout.strip()
    assert "cryptography" not in loaded
    assert "pydantic" not in loaded
    assert "typer" not in loaded
