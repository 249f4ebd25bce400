"""Every API route answers 401 without credentials and 403 to a role below the one it needs.

The test walks the app's own route table, so a new route cannot escape it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient

from server.models import ROLES

Auth = Callable[[str], dict[str, str]]
PUBLIC = {"/api/v1/auth/token", "/api/v1/enroll", "/api/v1/renew"}


def _needed_role(dependant: Dependant) -> str | None:
    """The highest role any ``require_<role>`` dependency in the tree asks for."""
    found: list[str] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        name = getattr(current.call, "__name__", "")
        if name.startswith("require_"):
            found.append(name.removeprefix("require_"))
        elif name == "get_current_user":
            found.append("any")
        stack.extend(current.dependencies)
    ranked = [r for r in found if r in ROLES]
    if ranked:
        return max(ranked, key=ROLES.index)
    return "any" if found else None


def _api_routes(client: TestClient) -> list[tuple[str, str, str | None]]:
    routes: list[tuple[str, str, str | None]] = []
    # FastAPI nests included routers; iter_route_contexts flattens them with full paths.
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route, full_path = context.original_route, context.path or ""
        if isinstance(route, APIRoute) and full_path.startswith("/api/"):
            path = re.sub(r"\{[^}]+\}", "x1", full_path)
            for method in sorted((context.methods or set()) - {"HEAD", "OPTIONS"}):
                routes.append((method, path, _needed_role(route.dependant)))
        elif isinstance(route, APIWebSocketRoute):
            routes.append(("WS", full_path, _needed_role(route.dependant)))
    return routes


def test_every_api_route_declares_a_role(client: TestClient) -> None:
    routes = _api_routes(client)
    assert len(routes) >= 5
    undeclared = [(m, p) for m, p, role in routes if role is None and p not in PUBLIC and m != "WS"]
    assert undeclared == []


def test_no_credentials_gets_401_everywhere(client: TestClient) -> None:
    for method, path, _role in _api_routes(client):
        if path in PUBLIC or method == "WS":
            continue
        answer = client.request(method, path)
        assert answer.status_code == 401, (method, path, answer.text)


def test_a_role_below_the_needed_one_gets_403(client: TestClient, auth: Auth) -> None:
    checked = 0
    for method, path, role in _api_routes(client):
        if role not in ROLES or path in PUBLIC or method == "WS":
            continue
        for lower in ROLES[: ROLES.index(role)]:
            answer = client.request(method, path, headers=auth(lower))
            assert answer.status_code == 403, (method, path, lower, answer.text)
            checked += 1
    assert checked >= 2  # at least the admin-only registration, by operator and manager
