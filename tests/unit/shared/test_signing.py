"""Command signing: what the agent accepts, and every way it refuses a command."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import signing
from shared.errors import SignatureError
from shared.models import Command, dump_message
from shared.signing import (
    BadLifetime,
    BadSignature,
    ExpiredCommand,
    ForeignCommand,
    KeyFileError,
    MalformedCommand,
    NotYetValidCommand,
    ReplayCache,
    ReplayedCommand,
    UnsignedCommand,
    generate_command_key,
    public_key_pem,
    sign_command,
    verify_command,
)
from tests.fixtures.signed_commands import (
    DEVICE,
    NOW,
    SERVER_KEY,
    SERVER_PUB,
    make_command,
    signed_wire,
)


def test_valid_command_is_accepted_and_round_trips() -> None:
    cache = ReplayCache()
    command = verify_command(SERVER_PUB, signed_wire(), DEVICE, cache, now=NOW)
    assert command.id == "cmd-00000001"
    assert command.body["services"] == ["shell"]
    assert "cmd-00000001" in cache


def test_parsed_command_object_verifies_too() -> None:
    signed = sign_command(SERVER_KEY, make_command())
    assert verify_command(SERVER_PUB, signed, DEVICE, ReplayCache(), now=NOW).id == signed.id


def test_unsigned_command_is_refused() -> None:
    wire = dump_message(make_command())
    with pytest.raises(UnsignedCommand) as info:
        verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(), now=NOW)
    assert info.value.reason == "unsigned"
    assert isinstance(info.value, SignatureError)


def test_command_signed_by_another_key_is_refused_as_forged() -> None:
    forger = generate_command_key()
    wire = dump_message(sign_command(forger, make_command()))
    with pytest.raises(BadSignature) as info:
        verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(), now=NOW)
    assert info.value.reason == "bad_signature"


def test_tampered_body_is_refused() -> None:
    data = json.loads(signed_wire())
    data["body"]["services"] = ["shell", "vnc"]
    with pytest.raises(BadSignature):
        verify_command(SERVER_PUB, json.dumps(data), DEVICE, ReplayCache(), now=NOW)


def test_added_field_breaks_the_signature() -> None:
    data = json.loads(signed_wire())
    data["extra"] = "smuggled"
    with pytest.raises(BadSignature):
        verify_command(SERVER_PUB, json.dumps(data), DEVICE, ReplayCache(), now=NOW)


def test_replayed_command_is_refused() -> None:
    cache = ReplayCache()
    wire = signed_wire()
    verify_command(SERVER_PUB, wire, DEVICE, cache, now=NOW)
    with pytest.raises(ReplayedCommand) as info:
        verify_command(SERVER_PUB, wire, DEVICE, cache, now=NOW + timedelta(seconds=10))
    assert info.value.reason == "replayed"
    assert info.value.command_id == "cmd-00000001"


def test_expired_command_is_refused_beyond_the_skew_allowance() -> None:
    wire = signed_wire(make_command(ttl=timedelta(minutes=5)))
    late = NOW + timedelta(minutes=5, seconds=30)
    # Within the 60 s allowance: still accepted.
    verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(), now=late)
    with pytest.raises(ExpiredCommand) as info:
        verify_command(
            SERVER_PUB, wire, DEVICE, ReplayCache(), now=NOW + timedelta(minutes=6, seconds=1)
        )
    assert info.value.reason == "expired"


def test_command_issued_in_the_future_is_refused() -> None:
    wire = signed_wire(make_command(issued_at=NOW + timedelta(minutes=10)))
    with pytest.raises(NotYetValidCommand) as info:
        verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(), now=NOW)
    assert info.value.reason == "not_yet_valid"


def test_overlong_or_inverted_lifetime_is_refused() -> None:
    with pytest.raises(BadLifetime):
        verify_command(
            SERVER_PUB,
            signed_wire(make_command(ttl=timedelta(days=30))),
            DEVICE,
            ReplayCache(),
            now=NOW,
        )
    with pytest.raises(BadLifetime):
        verify_command(
            SERVER_PUB,
            signed_wire(make_command(ttl=timedelta(seconds=-1))),
            DEVICE,
            ReplayCache(),
            now=NOW,
        )


def test_command_for_another_device_is_refused() -> None:
    wire = signed_wire(make_command(device_id="mfp-0043"))
    with pytest.raises(ForeignCommand) as info:
        verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(), now=NOW)
    assert info.value.reason == "foreign"


def test_command_without_device_cannot_be_signed_nor_accepted() -> None:
    with pytest.raises(ValueError, match="device_id"):
        sign_command(SERVER_KEY, make_command(device_id=None))
    # Signed by hand over the canonical form, it is still refused as foreign.
    data = json.loads(dump_message(make_command(device_id=None)))
    data["sig"] = signing._b64url(SERVER_KEY.sign(signing.signed_payload(data)))
    with pytest.raises(ForeignCommand):
        verify_command(SERVER_PUB, json.dumps(data), DEVICE, ReplayCache(), now=NOW)


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"v":1}', b"\xff\xfe", b"x" * 70000])
def test_garbage_is_refused_as_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedCommand) as info:
        verify_command(SERVER_PUB, payload, DEVICE, ReplayCache(), now=NOW)
    assert info.value.reason == "malformed"


def test_non_canonical_signature_encoding_is_refused() -> None:
    signed = sign_command(SERVER_KEY, make_command())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signed.sig[-1])
    # The last character carries 4 unused bits: flipping one decodes to the same bytes.
    twin = signed.sig[:-1] + alphabet[last ^ 1]
    with pytest.raises(BadSignature):
        verify_command(
            SERVER_PUB, signed.model_copy(update={"sig": twin}), DEVICE, ReplayCache(), now=NOW
        )


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), new_byte=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_fails_verification(position: int, new_byte: int) -> None:
    wire = bytearray(signed_wire())
    index = position % len(wire)
    if wire[index] == new_byte:
        new_byte = (new_byte + 1) % 256
    wire[index] = new_byte
    with pytest.raises(SignatureError):
        verify_command(SERVER_PUB, bytes(wire), DEVICE, ReplayCache(), now=NOW)


def test_replay_cache_persists_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    wire = signed_wire()
    verify_command(SERVER_PUB, wire, DEVICE, ReplayCache(path), now=NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A restarted agent (a new cache on the same file) still refuses the replay.
    fresh = make_command(command_id="cmd-fresh-0001", issued_at=datetime.now(UTC))
    fresh_wire = signed_wire(fresh)
    verify_command(SERVER_PUB, fresh_wire, DEVICE, ReplayCache(path))
    with pytest.raises(ReplayedCommand):
        verify_command(SERVER_PUB, fresh_wire, DEVICE, ReplayCache(path))


def test_damaged_replay_cache_refuses_commands_issued_before_it_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    path.write_text("{broken")
    cache = ReplayCache(path)
    old = signed_wire(make_command(issued_at=datetime.now(UTC) - timedelta(minutes=1)))
    with pytest.raises(ReplayedCommand):
        verify_command(SERVER_PUB, old, DEVICE, cache)
    new = signed_wire(
        make_command(
            command_id="cmd-after-loss", issued_at=datetime.now(UTC) + timedelta(seconds=1)
        )
    )
    verify_command(SERVER_PUB, new, DEVICE, cache)


def test_bounded_cache_never_reopens_a_replay_window() -> None:
    cache = ReplayCache(max_entries=3)
    wires = [
        signed_wire(make_command(command_id=f"cmd-{i:08d}", issued_at=NOW + timedelta(seconds=i)))
        for i in range(5)
    ]
    for wire in wires:
        verify_command(SERVER_PUB, wire, DEVICE, cache, now=NOW + timedelta(seconds=5))
    assert len(cache) == 3
    # The first two were forgotten, yet replaying them is still refused.
    for wire in wires[:2]:
        with pytest.raises(ReplayedCommand):
            verify_command(SERVER_PUB, wire, DEVICE, cache, now=NOW + timedelta(seconds=6))
    newer = signed_wire(
        make_command(command_id="cmd-newer-01", issued_at=NOW + timedelta(seconds=9))
    )
    verify_command(SERVER_PUB, newer, DEVICE, cache, now=NOW + timedelta(seconds=10))


def test_key_pem_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "command.key"
    signing.write_private_key(path, SERVER_KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = signing.read_private_key(path)
    assert public_key_pem(loaded) == SERVER_PUB
    pub_path = tmp_path / "command.pub.pem"
    pub_path.write_bytes(SERVER_PUB)
    assert public_key_pem(signing.read_public_key(pub_path)) == SERVER_PUB


def test_wrong_key_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        signing.read_public_key(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(KeyFileError, match=r"bad\.pem"):
        signing.read_private_key(bad)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="Ed25519"):
        signing.load_public_key(ec_pub)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "short"),
        ("id", 12345678),
        ("type", "Session.Open"),
        ("type", ""),
        ("issued_at", "2026-11-22T23:00:00"),
        ("expires_at", "soon"),
        ("device_id", "MFP_42"),
        ("body", ["not", "an", "object"]),
        ("v", 2),
        ("sig", None),
    ],
)
def test_a_field_the_command_model_refuses_is_malformed(field: str, value: object) -> None:
    data = json.loads(signed_wire())
    data[field] = value
    with pytest.raises(ValueError, match=field):
        Command.model_validate(data)  # the server's model refuses it too
    with pytest.raises(MalformedCommand, match=field):
        verify_command(SERVER_PUB, json.dumps(data), DEVICE, ReplayCache(), now=NOW)


def test_without_a_usable_libcrypto_cryptography_checks_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared import openssl_ed25519

    monkeypatch.setattr(openssl_ed25519, "_loaded", [None])
    assert verify_command(SERVER_PUB, signed_wire(), DEVICE, ReplayCache(), now=NOW).id
    wire = bytearray(signed_wire())
    at = wire.index(b'"sig":"') + 10  # a character inside the signature: another valid one
    wire[at] = ord("A") if wire[at] != ord("A") else ord("B")
    with pytest.raises(BadSignature, match="bad signature"):
        verify_command(SERVER_PUB, bytes(wire), DEVICE, ReplayCache(), now=NOW)


def test_a_loaded_key_still_verifies() -> None:
    key = signing.load_public_key(SERVER_PUB)
    assert verify_command(key, signed_wire(), DEVICE, ReplayCache(), now=NOW).id


def test_the_pinned_key_is_read_as_pem_or_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "command-key.pem"
    with pytest.raises(KeyFileError, match="cannot read"):
        signing.read_pinned_key(path)
    path.write_bytes(SERVER_PUB)
    assert signing.read_pinned_key(path) == SERVER_PUB
    path.write_text("hello")
    with pytest.raises(KeyFileError, match=r"command-key\.pem"):
        signing.read_pinned_key(path)
