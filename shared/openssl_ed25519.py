"""Ed25519 signature checks with the OpenSSL that Python's ``ssl`` module has already loaded.

The agent verifies each signed command (:func:`shared.signing.verify_command`).
``cryptography`` would do it with its own copy of OpenSSL, about 7 MiB resident
that the agent would then hold until it restarts, for a few checks a day. The
agent already has the system's ``libcrypto`` mapped (its ``ssl`` module, for
the broker's TLS), and that library offers the same check: ``EVP_DigestVerify``
with an ``EVP_PKEY_ED25519`` key, the very calls ``cryptography`` makes. This
module calls it through :mod:`ctypes` (about 0.4 MiB).

It is used only when it can be trusted: the ``libcrypto`` found mapped into
this process must export the functions and pass RFC 8032's first test vector
(a good signature verifies, a changed one does not) at first use; otherwise
:func:`verify` answers ``None`` and the caller uses ``cryptography``. Only
public data goes through it (the pinned public key, the signature and the
signed bytes): no secret is ever handed to it, so it has no key to leak.
"""

from __future__ import annotations

import ctypes
import logging
import ssl  # noqa: F401 - maps the libcrypto this module uses
import threading
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

#: ``EVP_PKEY_ED25519`` (``NID_ED25519``) in OpenSSL's headers.
_EVP_PKEY_ED25519: Final = 1087
# RFC 8032, section 7.1, TEST 1: an empty message.
_TEST_KEY: Final = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_TEST_SIGNATURE: Final = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

_lock = threading.Lock()
_loaded: list[Any] = []  # [the library, or None when it cannot be used]


def _mapped_libcrypto() -> str | None:
    """The path of the ``libcrypto`` this process has mapped (the ``ssl`` module's)."""

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith("libcrypto.so"):
            return path
    return None


def _bind(path: str) -> Any:
    lib = ctypes.CDLL(path)
    c_void_p, c_char_p, c_size_t, c_int = (
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
    )
    lib.EVP_PKEY_new_raw_public_key.argtypes = [c_int, c_void_p, c_char_p, c_size_t]
    lib.EVP_PKEY_new_raw_public_key.restype = c_void_p
    lib.EVP_PKEY_free.argtypes = [c_void_p]
    lib.EVP_PKEY_free.restype = None
    lib.EVP_MD_CTX_new.argtypes = []
    lib.EVP_MD_CTX_new.restype = c_void_p
    lib.EVP_MD_CTX_free.argtypes = [c_void_p]
    lib.EVP_MD_CTX_free.restype = None
    lib.EVP_DigestVerifyInit.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]
    lib.EVP_DigestVerifyInit.restype = c_int
    lib.EVP_DigestVerify.argtypes = [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t]
    lib.EVP_DigestVerify.restype = c_int
    lib.ERR_clear_error.argtypes = []
    lib.ERR_clear_error.restype = None
    return lib


def _check(lib: Any, public_key: bytes, signature: bytes, message: bytes) -> bool:
    pkey = lib.EVP_PKEY_new_raw_public_key(_EVP_PKEY_ED25519, None, public_key, len(public_key))
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not pkey or not ctx:
            msg = "OpenSSL could not allocate an Ed25519 key or a digest context"
            raise MemoryError(msg)
        if lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
            msg = "OpenSSL refused to set up an Ed25519 verification"
            raise ValueError(msg)
        return bool(
            lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message)) == 1
        )
    finally:
        lib.EVP_MD_CTX_free(ctx)
        lib.EVP_PKEY_free(pkey)
        # A failed check leaves errors in this thread's OpenSSL queue: clear them so
        # that the ssl module never reads them as its own.
        lib.ERR_clear_error()


def _library() -> Any:
    with _lock:
        if not _loaded:
            lib = None
            path = _mapped_libcrypto()
            try:
                if path is not None:
                    candidate = _bind(path)
                    changed = bytes([_TEST_SIGNATURE[0] ^ 1]) + _TEST_SIGNATURE[1:]
                    if _check(candidate, _TEST_KEY, _TEST_SIGNATURE, b"") and not _check(
                        candidate, _TEST_KEY, changed, b""
                    ):
                        lib = candidate
            except (OSError, AttributeError, ValueError, MemoryError) as exc:
                logger.debug("the mapped libcrypto cannot check Ed25519 signatures: %s", exc)
            if lib is None:
                logger.info("Ed25519 checks through cryptography (no usable libcrypto mapped)")
            _loaded.append(lib)
        return _loaded[0]


def available() -> bool:
    """Whether the mapped ``libcrypto`` checks Ed25519 signatures here."""
    return _library() is not None


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool | None:
    """Check an Ed25519 signature with the mapped ``libcrypto``.

    Args:
        public_key: The raw 32-byte public key.
        signature: The 64-byte signature.
        message: The signed bytes.

    Returns:
        Whether the signature is good, or ``None`` when this process has no usable
        ``libcrypto`` (the caller checks it with ``cryptography`` then).
    """
    lib = _library()
    if lib is None:
        return None
    try:
        return _check(lib, public_key, signature, message)
    except (ValueError, MemoryError):
        return False
