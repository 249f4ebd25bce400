"""Ed25519 checks through the libcrypto the ssl module maps agree with cryptography's."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import openssl_ed25519


def _cryptography_verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def test_the_mapped_libcrypto_is_used_here() -> None:
    # Linux with the ssl module: the check would pass vacuously through the fallback otherwise.
    assert openssl_ed25519.available()


@settings(max_examples=200, deadline=None)
@given(
    message=st.binary(max_size=300),
    flip=st.one_of(st.none(), st.integers(min_value=0, max_value=64 * 8 - 1)),
    other_message=st.booleans(),
)
def test_it_agrees_with_cryptography(message: bytes, flip: int | None, other_message: bool) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = bytearray(key.sign(message))
    if flip is not None:
        signature[flip // 8] ^= 1 << (flip % 8)
    checked = message + b"!" if other_message else message
    expected = _cryptography_verifies(public, bytes(signature), checked)
    assert openssl_ed25519.verify(public, bytes(signature), checked) is expected
    assert expected is (flip is None and not other_message)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"\x00" * 32, b"\x00" * 64),  # a small-order point and a zero signature
        (b"\xff" * 32, b"\x01" * 64),  # not a point at all
        (b"\x01" + b"\x00" * 31, b"\x01" + b"\x00" * 63),  # the identity point
    ],
)
def test_degenerate_keys_and_signatures_get_cryptographys_answer(
    public_key: bytes, signature: bytes
) -> None:
    expected = _cryptography_verifies(public_key, signature, b"message")
    assert openssl_ed25519.verify(public_key, signature, b"message") is expected


def test_a_wrong_length_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = key.sign(b"m")
    assert openssl_ed25519.verify(public[:31], signature, b"m") is False
    assert openssl_ed25519.verify(public, signature[:63], b"m") is False
