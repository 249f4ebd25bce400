"""The one broker-URL parser the agent and the server share."""

from __future__ import annotations

import pytest

from shared.broker_url import BrokerAddress, BrokerUrlError
from shared.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker.example", "broker.example", 1883, False),
        ("mqtts://broker.example", "broker.example", 8883, True),
        ("mqtts://broker.example:9883", "broker.example", 9883, True),
        ("MQTTS://10.0.0.5:8883", "10.0.0.5", 8883, True),
        ("mqtt://[::1]:1884", "::1", 1884, False),
        (" mqtt://h:1 ", "h", 1, False),
    ],
)
def test_parses_host_port_and_tls(url: str, host: str, port: int, tls: bool) -> None:
    address = BrokerAddress.parse(url)
    assert (address.host, address.port, address.tls) == (host, port, tls)
    assert address.scheme == ("mqtts" if tls else "mqtt")


def test_credentials_are_decoded_and_never_shown() -> None:
    address = BrokerAddress.parse("mqtts://fieldlink%20server:p%40ss@broker:8883")
    assert (address.username, address.password) == ("fieldlink server", "p@ss")
    assert "p@ss" not in repr(address)
    assert "fieldlink" not in repr(address)
    assert repr(address) == "BrokerAddress(mqtts://broker:8883)"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://broker:1883", "not 'http'"),
        ("broker:1883", "mqtt://host:port"),
        ("mqtts://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtts://broker:99999", "bad port"),
        ("mqtts://broker:port", "bad port"),
        ("", "mqtt://host:port"),
    ],
)
def test_refuses_what_is_not_a_broker_url(url: str, why: str) -> None:
    with pytest.raises(BrokerUrlError, match=why):
        BrokerAddress.parse(url)


def test_an_error_names_the_problem_but_not_the_password() -> None:
    with pytest.raises(BrokerUrlError) as caught:
        BrokerAddress.parse("mqtts://admin:hunter2@broker:70000")
    assert "hunter2" not in str(caught.value)
    # both a configuration error (exit code 2) and a ValueError (settings parsers)
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)


def test_the_servers_wrapper_adds_embedded() -> None:
    from server.mqtt import parse_broker_url

    assert parse_broker_url("embedded", embedded_port=18830) == BrokerAddress(
        "127.0.0.1", 18830, tls=False
    )
    with pytest.raises(ConfigError, match="not known yet"):
        parse_broker_url("embedded")
    with pytest.raises(ConfigError, match=r"^broker_url must be an mqtt://.*or 'embedded'"):
        parse_broker_url("ws://broker")


def test_the_agents_settings_name_the_key() -> None:
    from agent.config import load_agent_settings

    with pytest.raises(ConfigError, match=r"FIELDLINK_BROKER_URL: must be an mqtt://"):
        load_agent_settings(
            None, environ={"FIELDLINK_DEVICE_ID": "m-1", "FIELDLINK_BROKER_URL": "mqtts://"}
        )
