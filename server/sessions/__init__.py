"""Remote sessions on the server: the tunnel endpoint and the SSH client of each agent.

- :mod:`server.sessions.keys`: one-time client keys, session-token hashing, pinned host keys.
- :mod:`server.sessions.registry`: sessions waiting for their agent, and live connections.
- :mod:`server.sessions.relay`: the ``WS /api/v1/tunnel/{session_id}`` endpoint.
- :mod:`server.sessions.client`: :class:`~server.sessions.client.AgentConnection`.
- :mod:`shared.tunnel`: the asyncio transport over a WebSocket both ends use.
"""
