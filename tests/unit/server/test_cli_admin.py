"""The administrator's commands on a server's database: user add, device add, one-line errors.

They run in process (:func:`tests.fixtures.cli.fieldlink`), through the real command tree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.cli import (
    config_fixture,  # noqa: F401 - the `config` fixture
    fieldlink,
)


def test_user_add_reads_the_password_from_stdin(config: Path) -> None:
    done = fieldlink(
        "user", "add", "alice", "--role", "manager", "--config", str(config), stdin="s3cret-pass\n"
    )
    assert done.returncode == 0, done.stderr
    assert "created manager alice" in done.stdout
    again = fieldlink("user", "add", "alice", "--config", str(config), stdin="s3cret-pass\n")
    assert again.returncode == 5  # conflict: exists already
    assert again.stderr.strip() == "error: user 'alice' already exists"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "king"], "s3cret-pass\n", "unknown role 'king'"),
        ([], "short\n", "at least 8 characters"),
        ([], "", "no password given"),
    ],
)
def test_user_add_mistakes_are_one_line(
    config: Path, args: list[str], stdin: str, message: str
) -> None:
    done = fieldlink("user", "add", "bob", *args, "--config", str(config), stdin=stdin)
    assert done.returncode != 0
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_device_add_prints_the_id_and_a_token(config: Path) -> None:
    done = fieldlink(
        "device", "add", "--serial", "XK-1", "--model", "MP 6055", "--type", "mfp",
        "--customer", "Acme", "--region", "emea", "--config", str(config), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"id": "mfp-xk-1"' in done.stdout
    token = json.loads(done.stdout)["enrollment_token"]
    assert len(token) >= 40


def test_device_add_with_a_bad_type_is_one_line(config: Path) -> None:
    done = fieldlink(
        "device", "add", "--serial", "1", "--model", "m", "--type", "toaster",
        "--customer", "c", "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: --type: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    done = fieldlink(
        "user", "add", "x", "--config", str(tmp_path / "nope.toml"), stdin="12345678\n"
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.toml'}"


def test_help_lists_every_command() -> None:
    done = fieldlink("--help")
    assert done.returncode == 0
    for command in ("agent", "server", "user", "device", "devices", "login", "demo", "simulate"):
        assert command in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["user", "list"],
        ["user", "add", "x", "--role", "operator"],
        ["kpi"],
        ["incident", "export"],
        ["audit", "verify"],
        ["ca", "init"],
        ["broker-config", "--out", "mosquitto"],
        ["device", "add", "--serial", "1", "--model", "m", "--type", "mfp", "--customer", "c"],
    ],
)
def test_admin_commands_without_a_configuration_stop_with_one_line(
    tmp_path: Path, args: list[str]
) -> None:
    """On built-in defaults they would quietly create and use an empty database."""
    done = fieldlink(
        *args,
        stdin="s3cret-pass\n",
        env={"FIELDLINK_CREDENTIALS": str(tmp_path / "no-credentials.json")},
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "error: no configuration found: give --config FILE, set FIELDLINK_CONFIG, "
        "or write /etc/fieldlink/server.toml"
    )
    assert list(tmp_path.iterdir()) == []


def test_fieldlink_config_names_the_configuration(config: Path, tmp_path: Path) -> None:
    done = fieldlink("user", "list", env={"FIELDLINK_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("USER")


def test_user_list_disable_enable_role_remove(config: Path) -> None:
    c = ["--config", str(config)]
    for name, role in (("root", "admin"), ("olga", "operator")):
        assert (
            fieldlink("user", "add", name, "--role", role, *c, stdin="s3cret-pass\n").returncode
            == 0
        )
    assert fieldlink("user", "disable", "olga", *c).stdout.strip() == "disabled olga"
    listed = json.loads(fieldlink("user", "list", "--json", *c).stdout)
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("olga", "operator", True),
        ("root", "admin", False),
    ]
    assert "olga" in fieldlink("user", "list", *c).stdout
    assert fieldlink("user", "enable", "olga", *c).returncode == 0
    assert fieldlink("user", "role", "olga", "manager", *c).stdout.strip() == "olga is now manager"
    last = fieldlink("user", "disable", "root", *c)
    assert last.returncode != 0
    assert last.stderr.strip() == "error: cannot disable root: the last enabled administrator"
    reset = fieldlink("user", "reset-password", "olga", *c)
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith("one-time password for olga: ")
    assert fieldlink("user", "remove", "olga", *c).stdout.strip() == "removed olga"
    gone = fieldlink("user", "remove", "olga", *c)
    assert gone.returncode != 0
    assert gone.stderr.strip() == "error: no user 'olga'"
    verified = fieldlink("audit", "list", "--action", "user.remove", *c)
    assert "olga" in verified.stdout


def test_user_tokens_expire_within_the_maximum(config: Path) -> None:
    c = ["--config", str(config)]
    assert fieldlink("user", "add", "bot", *c, stdin="s3cret-pass\n").returncode == 0
    assert fieldlink("user", "token", "bot", *c).stdout.startswith("flk_")
    beyond = fieldlink("user", "token", "bot", "--days", "3650", *c)
    assert beyond.returncode != 0
    assert beyond.stderr.strip() == "error: --days: 1 to 90 (api_token_max_days)"


def test_next_step_hints_keep_the_config_given(config: Path) -> None:
    c = ["--config", str(config)]
    made = fieldlink("ca", "init", *c)
    assert made.returncode == 0, made.stderr
    assert f"next: fieldlink broker-config --out /etc/mosquitto/fieldlink --config {config}" in (
        made.stdout
    )


def test_user_reset_mfa_removes_a_second_factor(config: Path) -> None:
    from datetime import UTC, datetime

    import pyotp
    from sqlmodel import Session

    from server import crud, mfa
    from server.cli.common import open_database

    c = ["--config", str(config)]
    assert fieldlink("user", "add", "pia", *c, stdin="s3cret-pass\n").returncode == 0
    settings, engine = open_database(config)
    now = datetime.now(UTC)
    with Session(engine) as session:
        user = crud.get_user(session, username="pia")
        assert user is not None
        secret = mfa.begin_enrolment(session, settings, user=user).secret
        mfa.confirm_enrolment(
            session, settings, user=user, code=pyotp.TOTP(secret).at(now), now=now
        )
    listed = json.loads(fieldlink("user", "list", "--json", *c).stdout)
    assert listed[0]["mfa_enabled"] is True
    assert "two-factor" in fieldlink("user", "list", *c).stdout
    done = fieldlink("user", "mfa-reset", "pia", *c)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("two-factor login of pia removed")
    assert fieldlink("user", "reset-mfa", "pia", *c).stdout.strip() == "pia had no two-factor login"
    missing = fieldlink("user", "reset-mfa", "nobody", *c)
    assert missing.returncode != 0
    assert missing.stderr.strip() == "error: no user 'nobody'"
    assert "mfa.reset" in fieldlink("audit", "list", "--action", "mfa.reset", *c).stdout
    engine.dispose()
