"""Errors of the tunnel between the server and an agent."""

from __future__ import annotations

from shared.errors import AuthError, UnavailableError


class TunnelError(UnavailableError):
    """The tunnel to the agent failed or is closed."""


class AgentAuthFailed(AuthError):
    """The agent refused the session's key, or its host key is not the pinned one."""


class AgentNotConnected(TunnelError):
    """The agent did not open its tunnel in time."""
