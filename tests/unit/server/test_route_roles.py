"""Every API route answers 401 without credentials and 403 to a role below the one it needs.

The test walks the app's own route table, so a new route cannot escape it.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fixtures.route_roles import (
    Auth,
    check_a_role_below_the_needed_one_gets_403,
    check_every_api_route_declares_a_role,
    check_no_credentials_gets_401_everywhere,
)


def test_every_api_route_declares_a_role(client: TestClient) -> None:
    check_every_api_route_declares_a_role(client)


def test_no_credentials_gets_401_everywhere(client: TestClient) -> None:
    check_no_credentials_gets_401_everywhere(client)


def test_a_role_below_the_needed_one_gets_403(client: TestClient, auth: Auth) -> None:
    check_a_role_below_the_needed_one_gets_403(client, auth)
