"""The command line without surprises: whole purposes and examples in ``--help``, the nearest
command for a typo at every level, and one table of exit statuses for every command group.

In process (:func:`tests.fixtures.cli.fieldlink`), through the real command tree.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from shared import exit_codes
from shared.cli import GROUP, FieldlinkCLI, app, purpose
from shared.errors import (
    AuthError,
    ConfigError,
    Conflict,
    FieldlinkError,
    InvalidInput,
    NotFound,
    UnavailableError,
)
from tests.fixtures.cli import (
    config_fixture,  # noqa: F401 - the `config` fixture
    fieldlink,
)

NOBODY = {"FIELDLINK_CREDENTIALS": "/nonexistent/credentials.json"}


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_command_with_its_whole_purpose_and_three_examples() -> None:
    done = fieldlink("--help")
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:", 1)[1].split("Examples:", 1)[0]
    assert "..." not in commands  # nothing cut short
    group = FieldlinkCLI(name="fieldlink")
    flat = _flat(commands)
    for ep in entry_points(group=GROUP):
        command = group.get_command(None, ep.name)
        assert command is not None
        whole = purpose(command)
        assert len(whole) > 10, ep.name
        assert f"{ep.name} {whole}" in flat, ep.name
    examples = done.stdout.split("Examples:", 1)[1].split("Exit status", 1)[0]
    assert [line.split()[0] for line in examples.strip().splitlines()] == ["fieldlink"] * 3
    for code, meaning in exit_codes.MEANINGS.items():
        assert f"{code:>3}  {meaning}" in done.stdout


GROUPS = ["agent", "audit", "ca", "call", "customer", "device", "incident", "knowledge",
          "server", "session", "user", "window"]  # fmt: skip


@pytest.mark.parametrize("group", GROUPS)
def test_every_command_group_shows_three_examples_each_on_one_line(group: str) -> None:
    done = fieldlink(group, "--help", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.split("Examples:", 1)[1].splitlines()]
    examples = [line for line in lines if line]
    assert len(examples) == 3, done.stdout
    assert all(line.startswith("fieldlink ") and "  # " in line for line in examples), lines


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["sesion"], "error: No such command 'sesion'. Did you mean 'session'?"),
        (["devics"], "error: No such command 'devics'. Did you mean 'devices'?"),
        (["session", "opn"], "error: No such command 'opn'. Did you mean 'open'?"),
        (["user", "ad"], "error: No such command 'ad'. Did you mean 'add'?"),
        (["knowledge", "serch"], "error: No such command 'serch'. Did you mean 'search'?"),
        (["xyzzy"], "error: No such command 'xyzzy'. (see 'fieldlink --help')"),
        (
            ["session", "open"],
            "error: Missing argument 'device'. (see 'fieldlink session open --help')",
        ),
        (["--bogus"], "error: No such option: --bogus (see 'fieldlink --help')"),
    ],
)
def test_a_mistyped_command_is_one_line_with_the_nearest_and_exits_2(
    args: list[str], line: str
) -> None:
    done = fieldlink(*args, env=NOBODY)
    assert done.returncode == exit_codes.USAGE
    assert done.stderr.splitlines() == [line]
    assert done.stdout == ""


def test_the_statuses_are_defined_once_and_errors_carry_theirs() -> None:
    assert (exit_codes.OK, exit_codes.FAILURE, exit_codes.USAGE) == (0, 1, 2)
    assert FieldlinkError("x").exit_code == exit_codes.FAILURE
    assert ConfigError("x").exit_code == InvalidInput("x").exit_code == exit_codes.USAGE
    assert NotFound("x").exit_code == exit_codes.NOT_FOUND
    assert AuthError("x").exit_code == exit_codes.AUTH
    assert Conflict("x").exit_code == exit_codes.CONFLICT
    assert UnavailableError("x").exit_code == exit_codes.UNAVAILABLE
    assert len(set(exit_codes.MEANINGS)) == len(exit_codes.MEANINGS)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, exit_codes.OK),
        (400, exit_codes.USAGE),
        (422, exit_codes.USAGE),
        (401, exit_codes.AUTH),
        (403, exit_codes.AUTH),
        (404, exit_codes.NOT_FOUND),
        (409, exit_codes.CONFLICT),
        (429, exit_codes.UNAVAILABLE),
        (503, exit_codes.UNAVAILABLE),
        (504, exit_codes.UNAVAILABLE),
        (500, exit_codes.FAILURE),
    ],
)
def test_the_clients_one_mapping_of_http_statuses(status: int, code: int) -> None:
    from server.client.api import ApiError

    assert exit_codes.for_http_status(status) == code
    if status >= 400:
        assert ApiError("x", status=status).exit_code == code


def test_the_same_failure_exits_the_same_in_every_group(config: Path, tmp_path: Path) -> None:
    """Not logged in, no configuration, not found, conflict, unreachable: one status each."""
    for args in (["devices"], ["session", "list"], ["alerts"], ["knowledge", "search", "x"]):
        done = fieldlink(*args, env=NOBODY)
        assert done.returncode == exit_codes.AUTH, (args, done.stderr)
    missing = str(tmp_path / "missing.toml")
    for args in (["user", "list"], ["incident", "export"], ["kpi"], ["customer", "list"]):
        done = fieldlink(*args, "--config", missing)
        assert done.returncode == exit_codes.USAGE, (args, done.stderr)
    for args in (["user", "disable", "nobody"], ["customer", "show", "404"]):
        done = fieldlink(*args, "--config", str(config))
        assert done.returncode == exit_codes.NOT_FOUND, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    added = fieldlink("user", "add", "ann", "--config", str(config), stdin="pw-123456789\n")
    assert added.returncode == 0, added.stderr
    again = fieldlink("user", "add", "ann", "--config", str(config), stdin="pw-123456789\n")
    assert again.returncode == exit_codes.CONFLICT, again.stderr
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"server": "http://127.0.0.1:1", "token": "t"}))
    for args in (["devices"], ["session", "show", "ses-1"], ["alerts"]):
        done = fieldlink(*args, env={"FIELDLINK_CREDENTIALS": str(credentials)})
        assert done.returncode == exit_codes.UNAVAILABLE, (args, done.stderr)
    # exec and ssh keep 255 for their own errors (their status is the remote command's).
    for args in (["exec", "mfp-1", "--", "true"], ["ssh", "mfp-1"]):
        done = fieldlink(*args, env=NOBODY)
        assert done.returncode == exit_codes.REMOTE_OWN_ERROR, (args, done.stderr)


def test_the_app_is_the_fieldlink_cli() -> None:
    import typer

    assert isinstance(typer.main.get_command(app), FieldlinkCLI)


@pytest.mark.parametrize("args", [[], ["session"], ["user"]], ids=["top", "session", "user"])
def test_a_group_without_a_command_shows_its_help_not_an_error(args: list[str]) -> None:
    done = fieldlink(*args)
    assert "Usage: fieldlink" in done.stdout + done.stderr
    assert "error:" not in done.stdout + done.stderr
