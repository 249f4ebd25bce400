"""The request guard in front of every route: NUL characters are refused with 422 and
oversized JSON or form bodies with 413, before any route parses them, and nothing is
written; a backslash followed by ``u0000`` as text is still text."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from server.api.request_guard import NUL_MESSAGE, nul_detail
from tests.fixtures.api_auth import Auth

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _paths(client: TestClient) -> list[tuple[str, str]]:
    """Every mutating API route, its path parameters filled in."""
    routes: list[tuple[str, str]] = []
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        full_path = context.path or ""
        if isinstance(context.original_route, APIRoute) and full_path.startswith("/api/v1"):
            path = re.sub(r"\{[^}]+\}", "x1", full_path)
            routes += [(method, path) for method in sorted((context.methods or set()) & _MUTATING)]
    return routes


def test_every_mutating_route_refuses_a_nul_in_its_json(client: TestClient, auth: Auth) -> None:
    admin = auth("admin")
    routes = _paths(client)
    assert len(routes) > 40
    for method, path in routes:
        response = client.request(
            method,
            path,
            content=b'{"number": "C-1", "contacts": [{"name": "a"}, {"name": "x\\u0000"}]}',
            headers={**admin, "content-type": "application/json"},
        )
        assert response.status_code == 422, (method, path, response.text)
        assert response.json() == {"detail": nul_detail(["body", "contacts", 1, "name"])}


def test_a_nul_is_refused_and_nothing_written(client: TestClient, auth: Auth) -> None:
    admin = auth("admin")
    body = {"number": "C-1", "name": "Clinic\x00", "country": "JP"}
    assert client.post("/api/v1/customers", json=body, headers=admin).status_code == 422
    assert client.get("/api/v1/customers", headers=admin).json()["count"] == 0
    # As text, a backslash followed by "u0000" is a name like any other.
    body["name"] = "Clinic \\u0000"
    created = client.post("/api/v1/customers", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Clinic \\u0000"


def test_a_nul_in_a_query_a_path_or_a_form(client: TestClient, auth: Auth) -> None:
    admin = auth("admin")
    for url in (
        "/api/v1/devices?q=%00",
        "/api/v1/knowledge?limit=5&q=fuser%00",
        "/desk/find?q=%00",
    ):
        response = client.get(url, headers=admin)
        assert response.status_code == 422, url
        assert response.json() == {"detail": nul_detail(["query", "q"])}
    in_path = client.get("/api/v1/devices/a%00b", headers=admin)
    assert in_path.status_code == 422
    assert in_path.json()["detail"][0]["loc"] == ["path"]
    login = client.post(
        "/login",
        content=b"username=admin1%00&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert login.status_code == 422
    assert login.json() == {"detail": nul_detail(["body", "username"])}
    assert NUL_MESSAGE in login.text


def test_an_oversized_body_is_refused_declared_or_streamed(client: TestClient, auth: Auth) -> None:
    admin = auth("admin")
    huge = b'{"name": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    declared = client.post(
        "/api/v1/customers",
        content=huge,
        headers={**admin, "content-type": "application/json"},
    )
    assert declared.status_code == 413
    assert "larger than 1048576 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 64 * 1024):
            yield huge[start : start + 64 * 1024]

    streamed = client.post(
        "/api/v1/customers",
        content=chunks(),
        headers={**admin, "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert client.get("/api/v1/customers", headers=admin).json()["count"] == 0
    # A body just under the cap reaches the route (which answers it on its own terms).
    fine = client.post(
        "/api/v1/customers",
        json={"number": "C-2", "name": "y" * 1000, "country": "JP"},
        headers=admin,
    )
    assert fine.status_code == 422  # the route's own limit on a name (256)
    assert NUL_MESSAGE not in fine.text
