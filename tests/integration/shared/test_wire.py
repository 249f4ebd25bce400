"""The wire vocabulary: standard library only, and the one source the models are built from.

The part of tests/unit/shared/test_wire.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys

WIRE_MODULES = ("shared.wire", "shared.tunnel", "shared.broker_url", "shared.topics")


def _third_party_after(statement: str) -> list[str]:
    """Top-level modules outside the standard library and this project loaded by ``statement``."""
    probe = (
        f"{statement}\nimport sys\n"
        "own = {'shared', 'agent', 'server', 'provisioning'}\n"
        "names = {m.split('.')[0] for m in sys.modules}\n"
        "print(','.join(sorted(n for n in names if n not in sys.stdlib_module_names\n"
        "    and n not in own and not n.startswith('_'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_wire_modules_load_nothing_outside_the_standard_library() -> None:
    assert _third_party_after("import " + ", ".join(WIRE_MODULES)) == []


def test_the_probe_sees_a_third_party_import() -> None:
    # the check above would pass vacuously if the probe saw nothing
    assert "pydantic" in _third_party_after("import shared.models")
