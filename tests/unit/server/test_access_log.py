"""The HTTP access log: a JSON line per request, never a token, cookie or secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.access_log import redact_path, redact_query
from server.config import ServerSettings
from server.main import create_app
from tests.fixtures.api_auth import PASSWORD

SECRETS = ("flk_secret-bearer-value", "cookie-secret-value", "query-secret-value", PASSWORD)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_requests_are_logged_as_json_lines_without_secrets(
    settings: ServerSettings, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    app = create_app(settings.model_copy(update={"access_log_file": log}))
    with TestClient(app) as client:
        client.cookies.set("fieldlink_session", "cookie-secret-value")
        client.get(
            "/api/v1/devices?q=acme&token=query-secret-value&api_key=query-secret-value",
            headers={"Authorization": "Bearer flk_secret-bearer-value", "User-Agent": "probe/1"},
        )
        client.post("/api/v1/auth/token", data={"username": "x", "password": PASSWORD})
        client.post("/api/v1/surveys/query-secret-value", json={})
    text = log.read_text()
    for secret in SECRETS:
        assert secret not in text
    first, second, third = _lines(log)
    assert first["method"] == "GET"
    assert first["path"] == "/api/v1/devices"
    assert first["query"] == "q=acme&token=[redacted]&api_key=[redacted]"
    assert first["status"] == 401
    assert first["user_agent"] == "probe/1"
    assert first["client"] == "testclient"
    assert isinstance(first["duration_ms"], float)
    assert (second["path"], second["status"]) == ("/api/v1/auth/token", 401)
    assert third["path"] == "/api/v1/surveys/[redacted]"


def test_the_access_log_can_be_turned_off(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings.model_copy(update={"access_log": False}))) as client:
        caplog.clear()
        client.get("/healthz")
    assert [r for r in caplog.records if r.name == "fieldlink.access"] == []
    with TestClient(create_app(settings)) as client:
        caplog.clear()
        client.get("/healthz")
    (record,) = [r for r in caplog.records if r.name == "fieldlink.access"]
    assert record.getMessage() == "GET /healthz 200"


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("", ""),
        ("a=1&b=2", "a=1&b=2"),
        (
            "password=p&PassWord=q&csrf_token=c",
            "password=[redacted]&PassWord=[redacted]&csrf_token=[redacted]",
        ),
        ("sig=abc&limit=5", "sig=[redacted]&limit=5"),
    ],
)
def test_redacted_queries(query: str, logged: str) -> None:
    assert redact_query(query) == logged


def test_redacted_paths() -> None:
    assert redact_path("/api/v1/surveys/abc123") == "/api/v1/surveys/[redacted]"
    assert redact_path("/api/v1/devices/mfp-1") == "/api/v1/devices/mfp-1"


@pytest.mark.parametrize(
    ("path", "query", "logged"),
    [
        (
            "/desk/call",
            "ani=%2B81312345678&customer_no=4711",
            "ani=[redacted]&customer_no=[redacted]",
        ),
        ("/api/v1/lookup", "ani=0312345678", "ani=[redacted]"),
        ("/login", "next=%2Fdesk%2Fcall%3Fani%3D0312345678", "next=%2Fdesk%2Fcall%3F[redacted]"),
        ("/login", "next=%2Fdevices%2Fmfp-1", "next=%2Fdevices%2Fmfp-1"),
        ("/api/v1/devices", "q=0312345678", "q=0312345678"),
    ],
)
def test_a_callers_number_is_redacted(path: str, query: str, logged: str) -> None:
    assert redact_query(query, path) == logged
