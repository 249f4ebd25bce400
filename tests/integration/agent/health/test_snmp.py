"""The SNMP target's configuration and the Printer-MIB interpretation, without a device.

The part of tests/unit/agent/health/test_snmp.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_collector_and_profile_do_not_load_pysnmp_until_a_poll() -> None:
    def loaded(statement: str) -> bool:
        probe = f"{statement}\nimport sys\nprint('pysnmp' in sys.modules)\n"
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
        return result.stdout.strip() == "True"

    assert not loaded(
        "import agent.config, agent.health.profiles, agent.health.collectors.snmp\n"
        "from agent.health.profiles import ProfileOptions, create_profile\n"
        "create_profile('mfp', ProfileOptions('m-1', targets={'snmp_community': 'c'}), "
        "simulate=False)"
    )
    # the probe would pass vacuously if the module name were wrong
    assert loaded("import pysnmp.hlapi.v3arch.asyncio")
