"""The SSH gateway for native OpenSSH clients (``ssh -p 2222 DEVICE@server``).

- :mod:`server.gateway.server`: the listener.
- :mod:`server.gateway.connection`: one client's login, its session, its channels.
- :mod:`server.gateway.channels`: operator channels joined to the agent's channels.
- :mod:`server.gateway.keys`: operators' public keys (``fieldlink user add-key``).
- :mod:`server.gateway.hostkey`: the gateway's own host key.
"""

from server.gateway.server import Gateway, start_gateway

__all__ = ["Gateway", "start_gateway"]
