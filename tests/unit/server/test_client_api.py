"""The operator client's one error mapping, and ids that cannot reach another route."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from server.client.api import ApiClient, ApiError, part, raise_for_status
from shared.errors import AuthError, UnavailableError


def test_a_success_raises_nothing() -> None:
    raise_for_status(httpx.Response(200, json={"ok": True}))
    raise_for_status(httpx.Response(204))


def test_401_says_to_log_in_again() -> None:
    with pytest.raises(AuthError, match=r"^token expired \(run `fieldlink login` again\)$"):
        raise_for_status(httpx.Response(401, json={"detail": "token expired"}))


def test_a_refusal_is_its_status_and_the_servers_detail() -> None:
    with pytest.raises(ApiError, match=r"^404: no device 'mfp-9'$"):
        raise_for_status(httpx.Response(404, json={"detail": "no device 'mfp-9'"}))


def test_validation_errors_become_one_line() -> None:
    detail = [
        {"loc": ["body", "reason"], "msg": "field required"},
        {"loc": ["query", "limit"], "msg": "too large"},
    ]
    with pytest.raises(ApiError) as caught:
        raise_for_status(httpx.Response(422, json={"detail": detail}))
    assert str(caught.value) == "422: reason: field required; limit: too large"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>bad gateway</html>"),
        # A proxy (or an attacker in the path) answering JSON that is not an object.
        httpx.Response(500, json=["not", "an", "object"]),
        httpx.Response(400, json={"detail": [1, "two", None]}),
    ],
)
def test_an_answer_that_is_not_fieldlinks_is_still_one_error(response: httpx.Response) -> None:
    with pytest.raises(ApiError) as caught:
        raise_for_status(response)
    assert str(caught.value).startswith(f"{response.status_code}: ")
    assert "\n" not in str(caught.value)


def test_an_id_cannot_reach_another_route() -> None:
    assert part("../../users/admin") == "..%2F..%2Fusers%2Fadmin"
    assert part("mfp-1?x=1#y") == "mfp-1%3Fx%3D1%23y"


def test_a_server_that_is_down_is_unavailable() -> None:
    client = ApiClient("http://127.0.0.1:1", "t", timeout=2.0)
    try:
        with pytest.raises(UnavailableError, match=r"^cannot reach http://127\.0\.0\.1:1"):
            client.devices()
        with pytest.raises(UnavailableError):
            client.recording("ses-1")
    finally:
        client.close()
