"""The imaging profile's service checks against real things: a process found by name (the
`sleep` binary, started here) and a DICOM peer's port found listening, then closed.

Moved from the unit tests (they start no binaries). Its own module, after test_agent_imaging:
run before `test_the_center_shows_the_dicom_fault_open_then_cleared` in the same process
(as it was on main, from tests/unit), that test sees the peer "aborted" instead of
"refused" (cause not found yet).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.dicom import VerificationScp, imaging_profile
from tests.fixtures.ports import free_port
from tests.fixtures.profiles import fault_codes

pytestmark = pytest.mark.integration


async def test_services_by_process_and_by_listening_port(scp: VerificationScp) -> None:
    sleeper = await asyncio.create_subprocess_exec("sleep", "300")
    try:
        profile = imaging_profile(
            [],
            services_check=[
                {"name": "acquisition", "process": "sleep"},
                {"name": "dicom_store", "port": scp.port},
                {"name": "viewer", "port": free_port()},
            ],
        )
        reading = await profile.collect()
        assert reading.metrics["imaging.service_up:acquisition"] == 1.0
        assert reading.metrics["imaging.service_up:dicom_store"] == 1.0
        assert reading.metrics["imaging.service_up:viewer"] == 0.0
        assert "nothing listens on TCP port" in fault_codes(reading)["SVC-DOWN-VIEWER"]
    finally:
        sleeper.kill()
        await sleeper.wait()
    scp.stop()
    after = await profile.collect()
    assert after.metrics["imaging.service_up:dicom_store"] == 0.0
    assert set(fault_codes(after)) >= {"SVC-DOWN-DICOM_STORE", "SVC-DOWN-VIEWER"}
