"""The command line in the operator's language: the catalogs of the ``cli`` domain complete,
the language read from the standard environment, the error lines translated and the exit
statuses the same in every language; English with ``C`` or ``POSIX``.

In process (:func:`tests.fixtures.cli.fieldlink`), through the real command tree.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

# ``--help`` loads every command; asyncssh looks for its libraries (ldconfig) when first
# imported: here, at collection, not inside a test (tests/unit runs in process only).
import asyncssh  # noqa: F401
import pytest

from server.client.tables import echo_page
from shared import cli_language, exit_codes
from shared.cli import GROUP, FieldlinkCLI
from shared.cli_language import DOMAIN, LANGUAGES, LOCALE_DIR, language, tr
from tests.fixtures.cli import fieldlink
from tests.fixtures.translations import catalog_problems

NOBODY = {"FIELDLINK_CREDENTIALS": "/nonexistent/credentials.json"}
ROOT = Path(__file__).resolve().parents[3]


def test_every_text_of_the_command_line_is_translated_and_compiled() -> None:
    assert catalog_problems(LOCALE_DIR, DOMAIN, LANGUAGES[1:]) == []


def test_the_catalogs_ship_in_the_wheel_and_the_sdist() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        data = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["shared"]
    assert "locale/*/LC_MESSAGES/*.mo" in data
    assert "recursive-include shared/locale *.po *.pot *.mo" in (ROOT / "MANIFEST.in").read_text()
    assert "-o $(CLI_LOCALE)/cli.pot" in (ROOT / "Makefile").read_text()
    for lang in LANGUAGES[1:]:
        assert (LOCALE_DIR / lang / "LC_MESSAGES" / "cli.mo").is_file()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "C"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "POSIX", "LANGUAGE": "de"}, "en"),  # as GNU gettext: C ignores LANGUAGE
        ({"LANG": "ja_JP.UTF-8"}, "ja"),
        ({"LANG": "de_DE.UTF-8"}, "de"),
        ({"LANG": "fr_CA.UTF-8"}, "fr"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "ja_JP.UTF-8", "LC_MESSAGES": "de_DE.UTF-8"}, "de"),
        ({"LANG": "ja_JP.UTF-8", "LC_MESSAGES": "de_DE.UTF-8", "LC_ALL": "C"}, "en"),
        ({"LANG": "en_US.UTF-8", "LANGUAGE": "es:fr:de"}, "fr"),
        ({"LANG": "es_ES.UTF-8"}, "en"),
    ],
)
def test_the_language_is_the_environments(environ: dict[str, str], expected: str) -> None:
    assert language(environ) == expected


def test_a_message_is_said_in_the_language_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.delenv("LANGUAGE", raising=False)
    assert tr("window %(id)s removed", id=7) == "Wartungsfenster 7 entfernt"
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert tr("window %(id)s removed", id=7) == "window 7 removed"
    assert cli_language.catalog("en").gettext("yes") == "yes"


@pytest.mark.parametrize(
    ("lang", "line"),
    [
        ("C", "error: not logged in: run `fieldlink login --server URL` first"),
        ("POSIX", "error: not logged in: run `fieldlink login --server URL` first"),
        (
            "ja_JP.UTF-8",
            "エラー: ログインしていません: まず `fieldlink login --server URL` を実行してください",
        ),
        (
            "de_DE.UTF-8",
            "Fehler: nicht angemeldet: führen Sie zuerst `fieldlink login --server URL` aus",
        ),
        ("fr_FR.UTF-8", "erreur : non connecté : lancez d’abord `fieldlink login --server URL`"),  # noqa: RUF001
        ("zh_CN.UTF-8", "错误：未登录：请先运行 `fieldlink login --server URL`"),  # noqa: RUF001
    ],
)
def test_an_error_line_is_translated_and_the_exit_status_is_the_same(lang: str, line: str) -> None:
    done = fieldlink("devices", env={**NOBODY, "LANG": lang})
    assert done.returncode == exit_codes.AUTH
    assert done.stderr.splitlines() == [line]
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"LANG": "C.UTF-8"}, "error: No such command 'sesion'. Did you mean 'session'?"),
        ({"LANG": "de_DE.UTF-8"}, "Fehler: Kein Befehl 'sesion'. Meinten Sie 'session'?"),
        (
            {"LANG": "ja_JP.UTF-8"},
            "エラー: コマンド 'sesion' はありません。'session' のことですか?",
        ),
        (
            {"LANG": "ja_JP.UTF-8", "LC_ALL": "C"},
            "error: No such command 'sesion'. Did you mean 'session'?",
        ),
    ],
)
def test_a_typo_is_one_translated_line_and_exits_2(env: dict[str, str], line: str) -> None:
    done = fieldlink("sesion", env={**NOBODY, **env})
    assert done.returncode == exit_codes.USAGE
    assert done.stderr.splitlines() == [line]


def test_a_missing_argument_in_german_points_to_the_help() -> None:
    done = fieldlink("session", "open", env={**NOBODY, "LANG": "de_DE.UTF-8"})
    assert done.returncode == exit_codes.USAGE
    assert done.stderr.splitlines() == [
        "Fehler: Argument 'device' fehlt. (siehe 'fieldlink session open --help')"
    ]


def test_the_help_says_the_exit_statuses_and_examples_in_the_readers_language() -> None:
    done = fieldlink("--help", env={"LANG": "ja_JP.UTF-8", "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    assert "コマンド:" in done.stdout
    assert "例:" in done.stdout
    assert "終了ステータス(全コマンド共通。docs/operations.md):" in done.stdout
    assert "4  未ログインまたは権限なし" in done.stdout
    english = fieldlink("--help", env={"LANG": "C", "COLUMNS": "120"})
    assert "Exit status (the same in every command; docs/operations.md):" in english.stdout
    assert "4  not logged in or not allowed" in english.stdout


def test_a_tables_header_and_count_are_translated_and_aligned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LANGUAGE", raising=False)
    page = {"items": [{"id": "mfp-0042", "state": "active"}], "count": 3}
    echo_page(
        page,
        as_json=False,
        header=(tr("DEVICE"), tr("STATE")),
        row=lambda item: (item["id"], item["state"]),
        noun=tr("sessions"),
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "デバイス  状態"
    assert lines[1] == "mfp-0042  active"  # デバイス is as wide as mfp-0042 on a terminal
    assert lines[2] == "件のセッション 3 件中 1 件"


@pytest.mark.parametrize(
    ("lang", "line"),
    [
        ("C", "error: give --tier, --to or both"),
        ("de_DE.UTF-8", "Fehler: geben Sie --tier, --to oder beides an"),
        ("fr_FR.UTF-8", "erreur : indiquez --tier, --to ou les deux"),
    ],
)
def test_a_center_commands_error_is_translated_too(lang: str, line: str) -> None:
    done = fieldlink("incident", "escalate", "7", "--note", "x", env={**NOBODY, "LANG": lang})
    assert done.returncode == exit_codes.USAGE
    assert done.stderr.splitlines() == [line]


# ``--help`` in the reader's language: the purposes, the command's help and its options'.
JA = {"LANG": "ja_JP.UTF-8", "COLUMNS": "200"}
DE = {"LANG": "de_DE.UTF-8", "COLUMNS": "200"}


def test_the_top_level_help_lists_the_purposes_in_the_readers_language() -> None:
    done = fieldlink("--help", env=DE)
    assert done.returncode == 0, done.stderr
    assert "fieldlink: Fernwartung für installierte Geräte." in done.stdout
    assert "Fernsitzungen: öffnen, auflisten, anzeigen, schließen" in done.stdout
    assert "--version   die Version ausgeben" in done.stdout
    japanese = fieldlink("--help", env=JA).stdout
    purpose = "リモートセッション: 開く、一覧、表示、閉じる、録画のダウンロード。"
    assert f"session        {purpose}" in japanese


def test_a_groups_and_a_commands_help_are_in_the_readers_language() -> None:
    group = fieldlink("session", "--help", env=JA)
    assert group.returncode == 0, group.stderr
    assert "リモートセッション: 開く、一覧、表示、閉じる、録画のダウンロード。" in group.stdout
    assert "セッションを新しい順に一覧表示します。" in group.stdout  # ``list``'s purpose
    command = fieldlink("session", "open", "--help", env=DE)
    assert command.returncode == 0, command.stderr
    assert "Eine Sitzung zu einem Gerät öffnen; ihre ID ausgeben" in command.stdout
    assert "warum (dem Standort angezeigt, auditiert)" in command.stdout
    assert "die Geräte-ID" in command.stdout
    assert "why (shown" not in command.stdout
    # The language is read as the help is shown: English again in the same process.
    english = fieldlink("session", "open", "--help", env={"COLUMNS": "200"})
    assert "why (shown to the site, audited)" in english.stdout


# sha256 of ``fieldlink ... --help`` (COLUMNS=80, LANG=C.UTF-8) before the help was translated.
ENGLISH_HELP = {
    ("session", "close"): "1e918318da6840b8b37f7823faf1bee19633fda420cbfcd8553aa78388acb3cb",
    ("passwd",): "aed600a9654fa566eff777bfe30907ee44a92c229397f430d61e5af53c6fa366",
    ("session",): "3c05cbba4374af0640288ee89a94f2d5905b2c5e02314b388567bd9f5b5d71e9",
    ("devices",): "87b8ff17da7e67fabf52133d08e05d4d87d9410c693f00f3a4278dd47c287415",
}


@pytest.mark.parametrize("args", sorted(ENGLISH_HELP))
def test_the_help_in_english_is_byte_for_byte_as_before(args: tuple[str, ...]) -> None:
    done = fieldlink(*args, "--help", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout_bytes).hexdigest() == ENGLISH_HELP[args], done.stdout


#: Options typer adds itself (in English, as click's ``--help``).
TYPERS_OWN = {"install_completion", "show_completion"}


def _tree(command: Any) -> Iterator[Any]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _tree(sub)


@pytest.mark.parametrize("lang", LANGUAGES[1:])
def test_every_commands_purpose_and_the_operators_options_have_a_translation(lang: str) -> None:
    said = cli_language.catalog(lang).gettext
    group = FieldlinkCLI(name="fieldlink")
    untranslated = []
    for ep in entry_points(group=GROUP):
        command = group.get_command(None, ep.name)
        assert command is not None
        if said(command.help) == command.help:
            untranslated.append(ep.name)
        if ep.value.startswith("server.client."):  # the operator's: every command and option
            for each in _tree(command):
                params = [p for p in each.params if p.name not in TYPERS_OWN]
                texts = [each.help, *(getattr(p, "help", None) for p in params)]
                untranslated += [f"{ep.name}: {t}" for t in texts if t and said(t) == t]
    assert untranslated == []
