"""Where a webhook may point: never the server's own host, a cloud's metadata service,
multicast or reserved addresses (private networks on request), unless allowed."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import httpx2 as httpx
import pytest

from server.config import ServerSettings
from server.notify.delivery import DeliveryError, post_webhook
from server.notify.destinations import BlockedDestination, DestinationPolicy, check_webhook_url
from server.notify.rules import NotifyRule


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("10.1.2.3", None),
        ("192.168.1.20", None),
        ("203.0.113.7", None),
        ("2001:db8::1", None),
    ],
)
def test_the_default_policy(address: str, why: str | None) -> None:
    assert DestinationPolicy().refusal(ipaddress.ip_address(address)) == why


def test_private_networks_on_request_and_an_allow_list_over_both() -> None:
    strict = DestinationPolicy.of([], block_private=True)
    assert strict.refusal(ipaddress.ip_address("10.1.2.3")) == "private"
    assert strict.refusal(ipaddress.ip_address("fd00::5")) == "private"
    assert strict.refusal(ipaddress.ip_address("93.184.215.14")) is None
    allowed = DestinationPolicy.of(["10.1.0.0/16", "127.0.0.1"], block_private=True)
    assert allowed.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert allowed.refusal(ipaddress.ip_address("10.2.0.1")) == "private"
    assert allowed.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert allowed.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"


def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    with pytest.raises(BlockedDestination, match=r"localhost is .*a loopback address"):
        asyncio.run(check_webhook_url("http://localhost:8080/hook", DestinationPolicy()))
    asyncio.run(
        check_webhook_url("http://localhost/hook", DestinationPolicy.of(["127.0.0.0/8", "::1"]))
    )
    with pytest.raises(BlockedDestination, match="cannot resolve"):
        asyncio.run(check_webhook_url("http://no-such-host.invalid/", DestinationPolicy()))


def test_the_settings_give_the_policy_and_refuse_a_bad_network() -> None:
    policy = ServerSettings(notify_webhook_allow=["127.0.0.1/32"]).webhook_policy()
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    with pytest.raises(ValueError, match="not an IP network: 'intranet'"):
        ServerSettings(notify_webhook_allow=["intranet"])


def test_a_blocked_webhook_is_never_requested(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_bytes(b"s3cret\n")
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    rule = NotifyRule(
        name="metadata",
        webhook_url="http://169.254.169.254/latest/meta-data/?token=abc",
        secret_file=secret,
    )

    async def post() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await post_webhook(rule, {"kind": "test"}, 1, 0.0, client, DestinationPolicy())

    with pytest.raises(DeliveryError, match="link-local address") as refused:
        asyncio.run(post())
    assert "abc" not in str(refused.value)  # the URL is shown masked
    assert requests == []
