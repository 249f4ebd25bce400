"""The agent reads session.open/close bodies without pydantic, and as the pydantic models do.

The part of tests/unit/agent/remote/test_session_bodies.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys


def test_reading_the_bodies_loads_no_pydantic() -> None:
    probe = (
        "import sys\n"
        "from agent.remote.session_bodies import parse_open, parse_close\n"
        "import agent.remote.sessions\n"
        "print('pydantic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
