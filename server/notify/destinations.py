"""Where a webhook may point: not at the server's own host or the cloud's metadata service.

A notification rule's URL is written by an administrator, but the server makes the
request, from inside the site's network: without a check, a rule (or a stolen admin
token) could make it post to ``http://127.0.0.1:...`` (the server's own ports, the
broker, the database), to ``169.254.169.254`` (a cloud instance's credentials) or to a
multicast address. Before each delivery the host is resolved and every address it
resolves to is checked (as GitLab does for its webhooks): loopback, link-local,
unspecified, multicast and reserved addresses are refused, private networks too when
``notify_webhook_block_private`` is set, unless a network of ``notify_webhook_allow``
holds the address. Redirects are never followed.

A DNS answer that changes between this check and the connection (rebinding) is not
caught: allow-list the receivers' networks where that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedDestination(Exception):
    """The webhook's host is, or resolves to, an address a webhook may not reach."""


@dataclass(frozen=True)
class DestinationPolicy:
    """Which addresses a webhook may reach (see the module's text)."""

    allow: tuple[IPNetwork, ...] = ()
    block_private: bool = False

    @classmethod
    def of(cls, allow: Iterable[str], *, block_private: bool = False) -> DestinationPolicy:
        """The policy from the settings' networks (``10.0.0.0/8``, ``127.0.0.1``)."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in allow), block_private)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a webhook may not reach ``address`` (``None``: it may)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allow):
            return None
        for kind, blocked in _KINDS:
            if blocked(address):
                return kind
        if self.block_private and address.is_private:
            return "private"
        return None


#: The kinds of address no webhook reaches unless allowed, and how to tell them.
_KINDS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("unspecified", lambda a: a.is_unspecified),
    ("multicast", lambda a: a.is_multicast),
    ("reserved", lambda a: a.is_reserved),
)


async def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_webhook_url(url: str, policy: DestinationPolicy) -> None:
    """Refuse ``url`` if its host is or resolves to a blocked address.

    Raises:
        BlockedDestination: the address and why (the message shows no path or query).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await _addresses(host, port)
    except OSError as exc:
        msg = f"cannot resolve {host}: {exc.strerror or exc}"
        raise BlockedDestination(msg) from exc
    for address in addresses:
        why = policy.refusal(address)
        if why is not None:
            msg = (
                f"{host} is {address}, a {why} address: webhooks may not reach it "
                "(allow its network with notify_webhook_allow)"
            )
            raise BlockedDestination(msg)
