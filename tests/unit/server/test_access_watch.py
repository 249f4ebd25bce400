"""What a live session or socket needs of its user to go on."""

from __future__ import annotations

import pytest

from server.sessions.access import Grant, user_denial


@pytest.mark.parametrize(
    ("grant", "needed", "why"),
    [
        (Grant("operator", False), "operator", None),
        (Grant("admin", False), "admin", None),
        (Grant("admin", False), "operator", None),
        (None, "operator", "the user was removed"),
        (Grant("operator", True), "operator", "the user was disabled"),
        (Grant("operator", False), "admin", "the user no longer has the admin role"),
        (Grant("viewer", False), "operator", "the user no longer has the operator role"),
        (
            Grant("operator", False, frozenset({"mfp-1"})),
            "operator",
            "the device is no longer in the user's scope",
        ),
        (Grant("operator", False, frozenset({"mfp-2"})), "operator", None),
    ],
)
def test_user_denial(grant: Grant | None, needed: str, why: str | None) -> None:
    assert user_denial(grant, needed, "mfp-1") == why
