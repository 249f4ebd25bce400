"""Every API route answers 401 without credentials and 403 to a role below the one it needs.

The test walks the app's own route table, so a new route cannot escape it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.fixtures.api_auth import engine_of
from tests.fixtures.route_roles import (
    Auth,
    check_a_role_below_the_needed_one_gets_403,
    check_every_api_route_declares_a_role,
    check_no_credentials_gets_401_everywhere,
    check_out_of_scope_is_hidden,
)
from tests.fixtures.scoped_fleet import build_fleet, scoped_users


def test_every_api_route_declares_a_role(client: TestClient) -> None:
    check_every_api_route_declares_a_role(client)


def test_no_credentials_gets_401_everywhere(client: TestClient) -> None:
    check_no_credentials_gets_401_everywhere(client)


def test_a_role_below_the_needed_one_gets_403(client: TestClient, auth: Auth) -> None:
    check_a_role_below_the_needed_one_gets_403(client, auth)


def test_a_scoped_user_never_sees_another_customers_device(
    client: TestClient, tmp_path: Path
) -> None:
    """Every route, asked by a customer-scoped operator, a region-scoped manager and a site
    user about the other customer's device, session, incident, call: 404 or 403, or an
    answer without a trace of it."""
    ours, theirs = build_fleet(engine_of(client), tmp_path / "recordings")
    users = scoped_users(client, ours)
    # 503: sessions are off in this app (no broker); asked only after the scope check.
    checked = check_out_of_scope_is_hidden(client, users, theirs, allowed={503})
    assert checked > 100
