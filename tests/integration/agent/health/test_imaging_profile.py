"""The real imaging profile against a real pynetdicom Verification SCP on loopback.

The part of tests/unit/agent/health/test_imaging_profile.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str) -> list[str]:
    modules = ("pynetdicom", "pydicom")
    probe = (
        f"{statement}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_pynetdicom_is_loaded_by_the_first_echo_only() -> None:
    build = (
        "from agent.config import load_agent_settings\n"
        "from agent.health.profiles import ProfileOptions, create_profile\n"
        "s = load_agent_settings(None, environ={}, device_id='ct-1', profile='imaging',\n"
        "    dicom_peers=[{'name': 'pacs', 'ae_title': 'PACS', 'host': '127.0.0.1', 'port': 9}])\n"
        "p = create_profile('imaging', ProfileOptions('ct-1', targets=s.profile_targets),\n"
        "    simulate=False)\n"
    )
    assert _loaded_after(build) == []
    echoed = build + "import asyncio\nasyncio.run(p.collect())\n"
    assert _loaded_after(echoed) == ["pynetdicom", "pydicom"]
