"""Command signing: what the agent accepts, and every way it refuses a command.

The part of tests/unit/shared/test_signing.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

from tests.fixtures.signed_commands import (
    NOW,
    SERVER_PUB,
    signed_wire,
)


def test_verification_loads_neither_pydantic_nor_cryptography() -> None:
    # The agent verifies commands: what that loads stays in its memory until it restarts.
    # (The libcrypto the ssl module maps checks the signature: tests/unit/shared/
    # test_openssl_ed25519.py checks that it is usable here, so this cannot pass vacuously.)
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from datetime import datetime\n"
        "from shared.signing import ReplayCache, verify_command\n"
        "now = datetime.fromisoformat(sys.argv[3])\n"
        "command = verify_command(sys.argv[1], sys.argv[2], 'mfp-0042', ReplayCache(), now)\n"
        "heavy = ('pydantic', 'shared.models', 'cryptography')\n"
        "print(command.id, [name for name in heavy if name in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, SERVER_PUB.decode(), signed_wire().decode(), NOW.isoformat()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.split() == ["cmd-00000001", "[]"]
