"""Site policy of remote sessions: parsing [agent.services]/[agent.policy], and the forward rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.remote.policy import ServiceTarget, SitePolicy
from shared.errors import ConfigError

SERVICES = {"web": "127.0.0.1:80", "vnc": "127.0.0.1:5900", "ipv6": "[::1]:8443"}


def test_from_config_reads_services_and_limits() -> None:
    policy = SitePolicy.from_config(
        SERVICES,
        {
            "services": ["web", "ipv6"],
            "consent": "required",
            "approval_timeout_s": 30,
            "max_duration_s": 600,
            "idle_timeout_s": 120.5,
            "sftp_folders": {"logs": "/var/log/printer"},
            "shell": "/bin/bash",
        },
    )
    assert policy.services["ipv6"] == ServiceTarget("ipv6", "::1", 8443)
    assert policy.allowed_services == frozenset({"web", "ipv6"})
    assert (policy.consent, policy.approval_timeout_s) == ("required", 30.0)
    assert (policy.max_duration_s, policy.idle_timeout_s) == (600.0, 120.5)
    assert policy.sftp_folders == {"logs": Path("/var/log/printer")}
    assert policy.login_shell == "/bin/bash"


def test_defaults_allow_every_configured_service_and_no_consent() -> None:
    policy = SitePolicy.from_config(SERVICES)
    assert policy.consent == "none"
    assert all(policy.is_allowed(name) for name in SERVICES)
    assert not policy.is_allowed("ssh")


@pytest.mark.parametrize(
    ("services", "table", "message"),
    [
        ({"web": "127.0.0.1"}, {}, "not host:port"),
        ({"web": "127.0.0.1:0"}, {}, "not host:port"),
        ({"web": "127.0.0.1:70000"}, {}, "not host:port"),
        ({"we b": "127.0.0.1:80"}, {}, "letters, digits"),
        (SERVICES, {"services": ["printer"]}, "unknown services"),
        (SERVICES, {"consent": "maybe"}, "consent"),
        (SERVICES, {"max_duration_s": 0}, "max_duration_s"),
        (SERVICES, {"idle_timeout_s": True}, "idle_timeout_s"),
        (SERVICES, {"sftp_folders": {"logs": "relative/path"}}, "absolute"),
        (SERVICES, {"colour": "blue"}, "unknown keys"),
    ],
)
def test_bad_configuration_is_one_clear_error(
    services: dict[str, str], table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SitePolicy.from_config(services, table)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("web", 0, ("127.0.0.1", 80)),
        ("web", 80, ("127.0.0.1", 80)),
        ("127.0.0.1", 80, ("127.0.0.1", 80)),
        ("::1", 8443, ("::1", 8443)),
        ("web", 81, None),
        ("vnc", 0, None),  # configured but not allowed
        ("127.0.0.1", 5900, None),  # the target of a service not allowed
        ("127.0.0.1", 22, None),
        ("localhost", 80, None),  # no name resolution on the device
        ("10.0.0.5", 80, None),
    ],
)
def test_forward_rule(host: str, port: int, expected: tuple[str, int] | None) -> None:
    policy = SitePolicy.from_config(SERVICES, {"services": ["web", "ipv6"]})
    target = policy.resolve_forward(host, port)
    assert ((target.host, target.port) if target else None) == expected


def test_a_session_can_only_narrow_the_site_policy() -> None:
    policy = SitePolicy.from_config(SERVICES, {"services": ["web", "ipv6"]})
    narrowed = policy.narrowed(frozenset({"web", "vnc"}))
    assert narrowed.allowed_services == frozenset({"web"})
    assert narrowed.resolve_forward("vnc", 0) is None
    assert narrowed.resolve_forward("ipv6", 0) is None
    assert policy.narrowed(None) is policy


def test_limited_takes_the_smaller_of_each_limit() -> None:
    policy = SitePolicy(max_duration_s=3600, idle_timeout_s=600, max_sessions=3)
    assert policy.limited() == policy
    limited = policy.limited(max_duration_s=60, idle_timeout_s=1200)
    assert (limited.max_duration_s, limited.idle_timeout_s) == (60.0, 600.0)
    assert limited.max_sessions == 3
    narrowed = SitePolicy.from_config(SERVICES, {"max_sessions": 2}).narrowed(frozenset({"web"}))
    assert narrowed.max_sessions == 2
    assert narrowed.is_allowed("web")
    assert not narrowed.is_allowed("vnc")


def test_a_session_to_a_watched_device_reaches_its_web_page_only() -> None:
    site = SitePolicy.from_config(
        SERVICES,
        {"services": ["web", "vnc"], "watched_services": ["web"], "consent": "notify",
         "sftp_folders": {"logs": "/var/log"}, "shell": "/bin/sh"},
    )  # fmt: skip
    printer = site.for_watched("192.0.2.10", {"web": 8080})
    # The printer's page, by name or by its exact target; https exists but is not allowed.
    assert printer.resolve_forward("web", 0) == ServiceTarget("web", "192.0.2.10", 8080)
    assert printer.resolve_forward("192.0.2.10", 8080) == ServiceTarget("web", "192.0.2.10", 8080)
    assert printer.resolve_forward("https", 0) is None
    assert printer.services["https"] == ServiceTarget("https", "192.0.2.10", 443)
    # Nothing of the gateway's own, no other port or host, no shell, no SFTP.
    for host, port in (("vnc", 0), ("127.0.0.1", 80), ("192.0.2.10", 22), ("192.0.2.11", 8080)):
        assert printer.resolve_forward(host, port) is None
    assert printer.allow_shell is False
    assert printer.sftp_folders == {}
    assert printer.login_shell is None
    # The site's consent and limits hold.
    assert printer.consent == "notify"
    assert site.allow_shell is True


def test_watched_services_default_to_none_and_name_only_web_pages() -> None:
    printer = SitePolicy.from_config(SERVICES, {}).for_watched("192.0.2.10")
    assert printer.resolve_forward("web", 0) is None
    assert printer.resolve_forward("https", 0) is None
    with pytest.raises(ConfigError, match="watched_services"):
        SitePolicy.from_config(SERVICES, {"watched_services": ["ssh"]})
    with pytest.raises(ConfigError, match="watched_services"):
        SitePolicy.from_config(SERVICES, {"watched_services": "web"})
