"""The MQTT broker's URL, parsed one way for the agent and the server.

``mqtt://host[:1883]`` is plain MQTT, ``mqtts://host[:8883]`` MQTT over TLS.
User name and password may be given in the URL (``mqtts://user:pw@host``, the
parts percent-decoded); the server uses them, the agent authenticates with its
certificate and ignores them. The password never appears in a ``repr``.
Standard library only: the idle agent loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from shared.errors import ConfigError

BrokerScheme = Literal["mqtt", "mqtts"]
DEFAULT_PORTS: Final[dict[str, int]] = {"mqtt": 1883, "mqtts": 8883}


class BrokerUrlError(ConfigError, ValueError):
    """A broker URL that is not ``mqtt://host[:port]`` or ``mqtts://host[:port]``.

    A :class:`ValueError` too, so that settings parsers that collect
    ``ValueError`` name the key it came from.
    """


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker listens and how to reach it.

    Attributes:
        host: Host name or address.
        port: TCP port.
        tls: Whether to speak TLS (``mqtts``).
        username: The user name of the URL, if any.
        password: The password of the URL, if any (never shown).
    """

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> BrokerScheme:
        """``mqtts`` with TLS, ``mqtt`` without."""
        return "mqtts" if self.tls else "mqtt"

    def __repr__(self) -> str:
        # Never show the password (nor the user) in logs or tracebacks.
        return f"BrokerAddress({self.scheme}://{self.host}:{self.port})"

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (default ports 1883, 8883).

        Args:
            url: The broker URL.

        Returns:
            The address, with the URL's user name and password when it has them.

        Raises:
            BrokerUrlError: for another scheme, a missing host or a bad port; the
                message does not repeat the URL (it may hold a password).
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            msg = f"must be an mqtt://host:port or mqtts://host:port URL, not {scheme!r}"
            raise BrokerUrlError(msg)
        try:
            port = parts.port
        except ValueError as exc:
            msg = "must be an mqtt://host:port or mqtts://host:port URL (bad port)"
            raise BrokerUrlError(msg) from exc
        if not parts.hostname:
            msg = "must be an mqtt://host:port or mqtts://host:port URL (no host)"
            raise BrokerUrlError(msg)
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORTS[scheme],
            tls=scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
