"""Remote sessions on the server: their life, the tunnel endpoint, the SSH client of each agent.

- :mod:`server.sessions.service`: :class:`~server.sessions.service.SessionService`
  (open, close, agent events), the class callers use.
- :mod:`server.sessions.states`: the state machine (which move is allowed).
- :mod:`server.sessions.repository`: session rows and their audit entries.
- :mod:`server.sessions.limits`: open sessions per device and per operator.
- :mod:`server.sessions.bridges`: the byte pumps (terminal, forward, SSH channels).
- :mod:`server.sessions.liveness`: server heartbeats; closing dead servers' sessions.
- :mod:`server.sessions.access`: ending sessions and channels whose access was revoked.
- :mod:`server.sessions.keys`: one-time client keys, session-token hashing, pinned host keys.
- :mod:`server.sessions.registry`: sessions waiting for their agent, and live connections.
- :mod:`server.sessions.relay`: the ``WS /api/v1/tunnel/{session_id}`` endpoint.
- :mod:`server.sessions.client`: :class:`~server.sessions.client.AgentConnection`.
- :mod:`shared.tunnel`: the asyncio transport over a WebSocket both ends use.
"""
