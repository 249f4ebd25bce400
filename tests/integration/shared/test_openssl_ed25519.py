"""Ed25519 checks through the libcrypto the ssl module maps agree with cryptography's.

The part of tests/unit/shared/test_openssl_ed25519.py that leaves the test's process
(a fresh Python process checks what importing loads); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def test_importing_and_checking_loads_no_cryptography() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    signature = key.sign(b"m").hex()
    probe = (
        "import sys\n"
        "from shared import openssl_ed25519\n"
        f"key, sig = bytes.fromhex({public!r}), bytes.fromhex({signature!r})\n"
        "ok = openssl_ed25519.verify(key, sig, b'm')\n"
        "print(ok, 'cryptography' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["True", "False"]
