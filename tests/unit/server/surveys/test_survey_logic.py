"""Survey tokens, scoring, NPS math, business hours, and the catalogs of every language."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from server.kpi.voice import nps
from server.models import Incident
from server.models.survey import LANGUAGES, SurveyAnswer
from server.surveys import tokens
from server.surveys.followups import add_business_hours
from server.surveys.i18n import LOCALE_DIR, render, translations
from server.surveys.mail import compose
from server.surveys.records import language_of, low_reasons, touchpoints_of

TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]


def _po(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def _mo(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_mo(handle)


def test_tokens_are_unguessable_and_only_their_hash_is_stored(tmp_path: Path) -> None:
    key = tokens.load_key(tmp_path / "survey.key")
    assert stat.S_IMODE((tmp_path / "survey.key").stat().st_mode) == 0o600
    assert tokens.load_key(tmp_path / "survey.key") == key  # made once
    seeds = {tokens.new_seed() for _ in range(100)}
    links = {tokens.token_for(key, seed) for seed in seeds}
    assert len(links) == 100
    token = next(iter(links))
    assert tokens.well_formed(token)
    assert len(token) == 43  # 256 bits
    stored = tokens.token_hash(token)
    assert token not in stored
    assert tokens.matches(token, stored)
    assert not tokens.matches(token[:-1] + ("A" if token[-1] != "A" else "B"), stored)
    other = tokens.load_key(tmp_path / "other.key")
    assert tokens.token_for(other, "seed") != tokens.token_for(key, "seed")


@pytest.mark.parametrize("bad", ["", "short", "x" * 44, "a/b" + "c" * 40, "é" * 43])
def test_malformed_tokens_are_refused_before_any_lookup(bad: str) -> None:
    assert not tokens.well_formed(bad)


def test_nps_edge_cases() -> None:
    assert nps(0, 0, 0) is None
    assert nps(5, 0, 5) == 100.0
    assert nps(0, 5, 5) == -100.0
    assert nps(0, 0, 5) == 0.0  # all passives
    assert nps(2, 1, 4) == 25.0


@given(st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=200))
def test_nps_matches_its_definition(scores: list[int]) -> None:
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    value = nps(promoters, detractors, len(scores))
    assert value is not None
    assert -100.0 <= value <= 100.0
    share = (promoters / len(scores) - detractors / len(scores)) * 100
    assert value == pytest.approx(share)


@pytest.mark.parametrize(
    ("recommend", "satisfaction", "low"),
    [
        (7, {}, []),
        (6, {}, ["recommend 6"]),
        (0, {}, ["recommend 0"]),
        (10, {"on_site": 2}, ["on_site 2"]),
        (10, {"call_center": 3, "remote_fix": 1}, ["remote_fix 1"]),
        (9, {"call_center": 5}, []),
    ],
)
def test_low_answers_need_a_call_back(
    recommend: int, satisfaction: dict[str, int], low: list[str]
) -> None:
    answer = SurveyAnswer.model_validate({"recommend": recommend, "satisfaction": satisfaction})
    assert low_reasons(answer) == low


def _incident(**values: object) -> Incident:
    base: dict[str, object] = {
        "device_id": "d",
        "device_type": "mfp",
        "opened_at": datetime(2026, 1, 1, tzinfo=UTC),
        "down_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return Incident.model_validate({**base, **values})


def test_touchpoints_follow_how_the_case_was_resolved() -> None:
    assert touchpoints_of(_incident(channel="phone", resolution="remote")) == [
        "call_center",
        "remote_fix",
    ]
    assert touchpoints_of(_incident(channel="alert", resolution="remote")) == ["remote_fix"]
    assert touchpoints_of(_incident(channel="alert", resolution="dispatch")) == ["on_site"]
    assert touchpoints_of(_incident(channel="web", resolution="phone")) == ["call_center"]
    assert touchpoints_of(_incident(channel="alert", resolution="no_fault")) == []


def test_the_language_is_the_contacts_then_the_countrys() -> None:
    assert language_of("ja-JP", "US") == "ja"
    assert language_of("zh_CN", None) == "zh"
    assert language_of(None, "de") == "de"
    assert language_of("pt", "FR") == "fr"
    assert language_of(None, None) == "en"


def test_business_hours_skip_the_weekend() -> None:
    friday = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    assert add_business_hours(friday, 24) == datetime(2026, 12, 7, 17, 0, tzinfo=UTC)
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert add_business_hours(saturday, 8) == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    monday = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    assert add_business_hours(monday, 2.5) == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_is_translated_and_compiled(lang: str) -> None:
    template = _po(LOCALE_DIR / "survey.pot")
    po_path = LOCALE_DIR / lang / "LC_MESSAGES" / "survey.po"
    catalog = _po(po_path)
    ids = {m.id for m in template if m.id}
    assert ids == {m.id for m in catalog if m.id}, "run make translations"
    for message in catalog:
        if message.id:
            assert message.string, (lang, message.id)
            assert not message.fuzzy, (lang, message.id)
            for placeholder in ("%(case)s", "%(name)s", "%(max)s", "%(date)s"):
                assert (placeholder in str(message.id)) == (placeholder in str(message.string))
    compiled = _mo(po_path.with_suffix(".mo"))
    assert {m.id: m.string for m in compiled if m.id} == {
        m.id: m.string for m in catalog if m.id
    }, "the .mo is stale: run make translations"


def test_the_template_uses_only_catalogued_texts() -> None:
    # Extracting again finds nothing the .pot lacks.
    from babel.messages.extract import extract_from_dir

    template = _po(LOCALE_DIR / "survey.pot")
    known = {m.id for m in template if m.id}
    root = LOCALE_DIR.parent
    found = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(root),
            method_map=[("**.py", "python"), ("templates/**.html", "jinja2")],
            options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
            keywords={"gettext": (2,), "_": None},
        )
    }
    assert found <= known


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("en", "How likely are you to recommend us"),
        ("ja", "同僚の方に薦める"),
        ("zh", "推荐我们的可能性"),
        ("de", "Kollegen empfehlen"),
        ("fr", "recommandiez à un collègue"),
    ],
)
def test_the_page_speaks_each_language(lang: str, text: str) -> None:
    assert translations(lang) is translations(lang)
    page = render(
        "survey.html",
        lang,
        state="form",
        case="#7",
        touchpoints=["remote_fix"],
        values={},
        comment_max=4000,
    )
    assert text in page
    assert "http" not in page.split("</head>")[0]  # no external resource
    assert 'name="viewport"' in page


def test_the_email_is_in_the_contacts_language() -> None:
    from server.models import Survey

    survey = Survey(
        incident_id=7,
        seed="s",
        token_hash="h",
        expires_at=datetime(2027, 1, 5, tzinfo=UTC),
        device_id="d",
        touchpoints="remote_fix",
        language="de",
        contact_name="Frau Weber",
        contact_email="weber@example.de",
    )
    subject, body = compose(survey, "https://fl.example/survey/abc")
    assert subject == "Wie waren wir? Ihr Servicefall #7"
    assert "Guten Tag Frau Weber," in body
    assert "https://fl.example/survey/abc" in body
    assert "2027-01-05" in body
    reminder, _ = compose(survey, "https://fl.example/survey/abc", reminder=True)
    assert reminder.startswith("Erinnerung")
