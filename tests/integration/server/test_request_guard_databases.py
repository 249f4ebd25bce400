"""NUL characters on SQLite and PostgreSQL: PostgreSQL cannot store one in a text value (it
was a 500 there and stored garbage on SQLite); the request guard answers 422 on both and
nothing is written, while the same requests without the NUL are created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.api.request_guard import nul_detail
from server.config import ServerSettings
from tests.fixtures.api_auth import make_auth
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration

_DEVICE = {"serial": "XK-1", "model": "Imagio MP 6055", "type": "mfp", "customer_number": "C-1"}
_ARTICLE = {"title": "Fuser thermistor", "error_codes": ["SC-541"], "steps": "Reseat CN12."}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    """The app of ``tests/fixtures/server_app.py`` on each database (``client`` follows)."""
    return app_settings(tmp_path, database_url)


def _with_nul(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {**body, field: f"{body[field]}\x00; DROP"}


def test_nul_characters_are_refused_on_both_databases(client: TestClient) -> None:
    auth = make_auth(client)
    admin, manager = auth("admin"), auth("manager")
    creates: list[tuple[str, dict[str, Any], str, str, dict[str, str]]] = [
        (
            "/api/v1/customers",
            {"number": "C-1", "name": "Clinic"},
            "name",
            "/api/v1/customers",
            admin,
        ),
        ("/api/v1/devices", _DEVICE, "model", "/api/v1/devices", admin),
        ("/api/v1/knowledge/articles", _ARTICLE, "steps", "/api/v1/knowledge?q=CN12", manager),
    ]
    for path, body, field, listing, headers in creates:
        refused = client.post(path, json=_with_nul(body, field), headers=headers)
        assert refused.status_code == 422, (path, refused.text)
        assert refused.json() == {"detail": nul_detail(["body", field])}
        assert client.get(listing, headers=headers).json()["count"] == 0, path
        created = client.post(path, json=body, headers=headers)
        assert created.status_code == 201, (path, created.text)
        assert client.get(listing, headers=headers).json()["count"] == 1, path
    for url in (
        "/api/v1/devices?q=XK%00",
        "/api/v1/knowledge?q=CN12%00",
        "/api/v1/customers?q=%00",
    ):
        answer = client.get(url, headers=manager)
        assert answer.status_code == 422, url
