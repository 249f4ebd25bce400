"""Operators' SSH keys for the gateway: parsing, duplicates, the API's roles, the CLI's errors,
and the gateway's own answer to a key (accepted, unknown, or its owner not allowed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import crud
from server.config import ServerSettings
from server.crud import InvalidInput
from server.gateway.keys import add_key, find_key, list_keys, parse_public_key, remove_key
from server.models import AuditEntry, User
from shared.errors import Conflict, NotFound
from tests.fixtures.cli import config_fixture  # noqa: F401 - the `config` fixture
from tests.fixtures.server_app import app_settings

Auth = Callable[[str], dict[str, str]]
FIELDLINK = [sys.executable, "-m", "shared"]


def public_line(key: asyncssh.SSHKey, comment: str | None = "olga@laptop") -> str:
    key.set_comment(comment)
    return key.export_public_key("openssh").decode().strip()


@pytest.fixture
def key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    """The unit app's settings, with the gateway on a free port (2222 may be taken)."""
    return app_settings(tmp_path, ssh_gateway_port=0)


# parsing


def test_a_public_key_line_is_normalized_with_the_fingerprint_ssh_keygen_shows(
    key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    line = public_line(key)
    parsed = parse_public_key(f"  {line}\n")
    assert parsed.key_type == "ssh-ed25519"
    assert parsed.public_key == line
    assert parsed.comment == "olga@laptop"
    (tmp_path / "k.pub").write_text(line + "\n")
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, check=False
    )
    if shown.returncode == 0:  # OpenSSH's own view, when it is installed
        assert shown.stdout.split()[1].decode() == parsed.fingerprint
    assert parsed.fingerprint == key.get_fingerprint("sha256")


def test_an_rfc4716_block_and_a_key_without_comment_are_accepted(key: asyncssh.SSHKey) -> None:
    block = key.export_public_key("rfc4716").decode()
    assert parse_public_key(block).fingerprint == key.get_fingerprint()
    bare = parse_public_key(public_line(key, None))
    assert bare.comment is None
    assert bare.public_key.count(" ") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no public key given"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-ed25519 AAAAnotbase64!!", "not an OpenSSH public key"),
        ("x" * 9000, "not a public key"),
    ],
)
def test_garbage_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_public_key(text)


def test_a_private_key_is_refused_and_not_echoed(key: asyncssh.SSHKey) -> None:
    private = key.export_private_key("openssh").decode()
    with pytest.raises(InvalidInput, match="private key") as refused:
        parse_public_key(private)
    assert private.splitlines()[1] not in str(refused.value)


def test_several_keys_options_and_weak_keys_are_refused(key: asyncssh.SSHKey) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(InvalidInput, match="one public key at a time"):
        parse_public_key(public_line(key) + "\n" + public_line(other))
    with pytest.raises(InvalidInput, match="not an OpenSSH public key"):
        parse_public_key('from="10.0.0.1" ' + public_line(key))
    small_rsa = asyncssh.generate_private_key("ssh-rsa", key_size=1024)
    with pytest.raises(InvalidInput, match="1024 bits"):
        parse_public_key(public_line(small_rsa))
    assert parse_public_key(public_line(asyncssh.generate_private_key("ssh-rsa"))).key_type == (
        "ssh-rsa"
    )


# storing


def test_keys_are_added_listed_found_and_removed_with_audit(
    engine: Engine, key: asyncssh.SSHKey
) -> None:
    with Session(engine) as session:
        crud.create_user(session, username="olga", role="operator", password="pw-12345678")
        added = add_key(session, username="olga", public_key=public_line(key), actor="admin")
        assert added.name == "olga@laptop"
        assert [k.fingerprint for k in list_keys(session, username="olga")] == [added.fingerprint]
        assert find_key(session, username="olga", key=str(added.id)).id == added.id
        assert find_key(session, username="olga", key="olga@laptop").id == added.id
        removed = remove_key(session, username="olga", key=added.fingerprint, actor="admin")
        assert removed.id == added.id
        assert list_keys(session, username="olga") == []
        actions = [
            (e.action, e.target, e.details)
            for e in session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
            if e.action.startswith("ssh_key.")
        ]
    assert [a[:2] for a in actions] == [
        ("ssh_key.add", "user:olga"),
        ("ssh_key.remove", "user:olga"),
    ]
    assert added.fingerprint in actions[0][2]


def test_a_key_belongs_to_one_user_only(engine: Engine, key: asyncssh.SSHKey) -> None:
    with Session(engine) as session:
        for name in ("olga", "piet"):
            crud.create_user(session, username=name, role="operator", password="pw-12345678")
        add_key(session, username="olga", public_key=public_line(key), name="laptop", actor="x")
        with pytest.raises(Conflict, match="already registered for olga as 'laptop'"):
            add_key(session, username="olga", public_key=public_line(key, "again"), actor="x")
        with pytest.raises(Conflict, match="already registered to another user") as other:
            add_key(session, username="piet", public_key=public_line(key), actor="x")
        assert "olga" not in str(other.value)
        with pytest.raises(NotFound, match="no user 'nobody'"):
            add_key(session, username="nobody", public_key=public_line(key), actor="x")
        with pytest.raises(NotFound, match="olga has no SSH key 'SHA256:nope'"):
            remove_key(session, username="olga", key="SHA256:nope", actor="x")
        with pytest.raises(InvalidInput, match="name"):
            add_key(session, username="piet", public_key=public_line(key), name=" ", actor="x")


# the API


def test_users_manage_their_own_keys_and_admins_anyones(
    client: TestClient, auth: Auth, key: asyncssh.SSHKey
) -> None:
    operator, admin = auth("operator"), auth("admin")
    added = client.post(
        "/api/v1/users/operator1/keys", json={"public_key": public_line(key)}, headers=operator
    )
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["fingerprint"] == key.get_fingerprint()
    assert (body["username"], body["name"], body["key_type"]) == (
        "operator1",
        "olga@laptop",
        "ssh-ed25519",
    )
    assert body["last_used_at"] is None
    listed = client.get("/api/v1/users/operator1/keys", headers=operator).json()
    assert listed["count"] == 1
    # Another user's keys: 403 for an operator (existing or not), allowed for an admin.
    for name in ("admin1", "ghost"):
        assert client.get(f"/api/v1/users/{name}/keys", headers=operator).status_code == 403
    other = public_line(asyncssh.generate_private_key("ssh-ed25519"))
    refused = client.post("/api/v1/users/admin1/keys", json={"public_key": other}, headers=operator)
    assert refused.status_code == 403
    assert client.get("/api/v1/users/operator1/keys", headers=admin).json()["count"] == 1
    assert client.get("/api/v1/users/ghost/keys", headers=admin).status_code == 404
    by_admin = client.post(
        "/api/v1/users/operator1/keys", json={"public_key": other, "name": "desk"}, headers=admin
    )
    assert by_admin.status_code == 201
    key_id = body["id"]
    assert client.delete(f"/api/v1/users/admin1/keys/{key_id}", headers=operator).status_code == 403
    assert client.delete(
        f"/api/v1/users/operator1/keys/{key_id}", headers=operator
    ).status_code == (204)
    gone = client.delete(f"/api/v1/users/operator1/keys/{key_id}", headers=operator)
    assert gone.status_code == 404
    assert client.get("/api/v1/users/operator1/keys", headers=operator).json()["count"] == 1


@pytest.mark.parametrize(
    ("public_key", "status", "detail"),
    [
        ("ssh-ed25519 garbage", 422, "not an OpenSSH public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", 422, "private key"),
    ],
)
def test_a_bad_key_is_a_422_with_the_reason(
    client: TestClient, auth: Auth, public_key: str, status: int, detail: str
) -> None:
    answer = client.post(
        "/api/v1/users/operator1/keys", json={"public_key": public_key}, headers=auth("operator")
    )
    assert answer.status_code == status
    assert detail in answer.json()["detail"]


def test_a_duplicate_key_is_a_409(client: TestClient, auth: Auth, key: asyncssh.SSHKey) -> None:
    body = {"public_key": public_line(key)}
    first = client.post("/api/v1/users/operator1/keys", json=body, headers=auth("operator"))
    assert first.status_code == 201
    again = client.post("/api/v1/users/manager1/keys", json=body, headers=auth("manager"))
    assert again.status_code == 409
    assert "already registered" in again.json()["detail"]


# the CLI


def fieldlink(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    return subprocess.run(
        [*FIELDLINK, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_cli_adds_lists_and_removes_keys(
    config: Path, tmp_path: Path, key: asyncssh.SSHKey
) -> None:
    made = fieldlink("user", "add", "olga", "--config", str(config), stdin="pw-12345678\n")
    assert made.returncode == 0, made.stderr
    (tmp_path / "olga.pub").write_text(public_line(key) + "\n")
    fingerprint = key.get_fingerprint()
    added = fieldlink(
        "user", "add-key", "olga", str(tmp_path / "olga.pub"), "--config", str(config)
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added {fingerprint} (olga@laptop) for olga"
    from_stdin = fieldlink(
        "user", "add-key", "olga", "-", "--name", "desk", "--config", str(config),
        stdin=public_line(asyncssh.generate_private_key("ssh-ed25519")),
    )  # fmt: skip
    assert from_stdin.returncode == 0, from_stdin.stderr
    listed = fieldlink("user", "keys", "olga", "--config", str(config))
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert fingerprint in lines[0]
    assert "never used" in lines[0]
    removed = fieldlink("user", "remove-key", "olga", fingerprint, "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert len(fieldlink("user", "keys", "olga", "--config", str(config)).stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["add-key", "olga", "{tmp}/missing.pub"], "cannot read {tmp}/missing.pub"),
        ("private", ["add-key", "olga", "{tmp}/id"], "that is a private key"),
        ("garbage", ["add-key", "olga", "{tmp}/id"], "not an OpenSSH public key"),
        ("public", ["add-key", "nobody", "{tmp}/id"], "no user 'nobody'"),
        (None, ["remove-key", "olga", "SHA256:nope"], "olga has no SSH key 'SHA256:nope'"),
        (None, ["keys", "nobody"], "no user 'nobody'"),
    ],
)
def test_cli_mistakes_are_one_line(
    config: Path, tmp_path: Path, setup: str | None, args: list[str], message: str
) -> None:
    made = fieldlink("user", "add", "olga", "--config", str(config), stdin="pw-12345678\n")
    assert made.returncode == 0, made.stderr
    key = asyncssh.generate_private_key("ssh-ed25519")
    contents = {
        "private": key.export_private_key("openssh").decode(),
        "garbage": "not a key at all\n",
        "public": public_line(key),
    }
    if setup is not None:
        (tmp_path / "id").write_text(contents[setup])
    done = fieldlink("user", *[a.format(tmp=tmp_path) for a in args], "--config", str(config))
    assert done.returncode != 0
    assert message.format(tmp=tmp_path) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    if setup == "private":
        assert contents["private"].splitlines()[1] not in done.stderr


# the gateway's answer to a key


class _Client(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


async def _login(port: int, key: asyncssh.SSHKey, host_key: str) -> str:
    """Connect as device ``mfp-1`` with ``key`` and run a command; why the connection ended."""
    client = _Client()
    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            port,
            username="mfp-1",
            client_factory=lambda: client,
            client_keys=[key],
            known_hosts=([asyncssh.import_public_key(host_key)], [], []),
            config=None,
            agent_path=None,
            preferred_auth="publickey",
        )
    except asyncssh.DisconnectError as exc:
        return f"{type(exc).__name__}: {exc.reason}"
    stderr = ""
    async with conn:
        with contextlib.suppress(asyncssh.Error):
            result = await asyncio.wait_for(conn.run("true", check=False), 20)
            stderr = str(result.stderr or "")
        await asyncio.wait_for(conn.wait_closed(), 20)
    lost = client.lost
    # The reason comes in the disconnect, and on the channel's stderr (whichever the
    # client reads first: a channel that closes first may end the run before the disconnect).
    if isinstance(lost, asyncssh.Error):
        return f"{type(lost).__name__}: {lost.reason} {stderr}"
    return f"ran {stderr}"


def test_the_gateway_accepts_only_registered_keys_of_allowed_users(
    client: TestClient, engine: Engine, settings: ServerSettings, key: asyncssh.SSHKey
) -> None:
    port = client.app.state.ssh_gateway_port  # type: ignore[attr-defined]
    assert isinstance(port, int)
    assert port > 0
    host_key = (settings.state_dir / "ssh_gateway_ed25519_key.pub").read_text()
    assert (settings.state_dir / "ssh_gateway_ed25519_key").stat().st_mode & 0o777 == 0o600
    disabled_key = asyncssh.generate_private_key("ssh-ed25519")
    with Session(engine) as session:
        for name in ("olga", "dora"):
            crud.create_user(session, username=name, role="operator", password="pw-12345678")
        add_key(session, username="olga", public_key=public_line(key), actor="test")
        add_key(session, username="dora", public_key=public_line(disabled_key), actor="test")
        dora = session.exec(select(User).where(User.username == "dora")).one()
        dora.disabled = True
        session.add(dora)
        session.commit()

    stranger = asyncssh.generate_private_key("ssh-ed25519")
    assert asyncio.run(_login(port, stranger, host_key)).startswith("PermissionDenied")
    assert "user dora is disabled" in asyncio.run(_login(port, disabled_key, host_key))
    # Olga gets in; this unit app has no CA, so the session itself is refused, with the reason.
    olga = asyncio.run(_login(port, key, host_key))
    assert "fieldlink: no session to mfp-1" in olga
    assert "fieldlink ca init" in olga

    def audited() -> list[AuditEntry]:
        with Session(engine) as session:
            return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)).all())

    # The gateway audits in the background: wait for its three entries.
    for _ in range(500):
        entries = audited()
        if sum(e.action.startswith("gateway.login") for e in entries) >= 3:
            break
        time.sleep(0.02)
    with Session(engine) as session:
        assert list_keys(session, username="olga")[0].last_used_at is not None
    failed = [e for e in entries if e.action == "gateway.login_failed"]
    assert {(e.actor, e.target) for e in failed} == {("anonymous", "mfp-1"), ("dora", "mfp-1")}
    assert any(stranger.get_fingerprint() in e.details for e in failed)
    assert any(e.action == "gateway.login" and e.actor == "olga" for e in entries)
