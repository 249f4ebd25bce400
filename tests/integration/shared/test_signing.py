"""Command signing: what the agent accepts, and every way it refuses a command.

The part of tests/unit/shared/test_signing.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.models import Command, dump_message
from shared.signing import (
    generate_command_key,
    public_key_pem,
    sign_command,
)

NOW = datetime(2026, 11, 22, 23, 0, 0, tzinfo=UTC)


DEVICE = "mfp-0042"


SERVER_KEY = generate_command_key()


SERVER_PUB = public_key_pem(SERVER_KEY)


def make_command(
    command_id: str = "cmd-00000001",
    device_id: str | None = DEVICE,
    issued_at: datetime = NOW,
    ttl: timedelta = timedelta(minutes=5),
    body: dict[str, object] | None = None,
) -> Command:
    return Command(
        id=command_id,
        type="session.open",
        issued_at=issued_at,
        expires_at=issued_at + ttl,
        device_id=device_id,
        body=body if body is not None else {"session_id": "s1", "services": ["shell"]},
    )


def signed_wire(command: Command | None = None) -> bytes:
    return dump_message(sign_command(SERVER_KEY, command or make_command()))


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
