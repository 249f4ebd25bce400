"""The liveness record of each server process (ARCHITECTURE.md, "Scale").

Every running server keeps one :class:`ServerInstance` row and refreshes its
``heartbeat_at`` every few seconds (:mod:`server.sessions.liveness`). A row
whose heartbeat stops moving belongs to a process that is gone (crashed,
killed, its host lost): another server then closes the sessions that process
held, which nobody else could ever close.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow


class ServerInstance(SQLModel, table=True):
    """One running server process: who it is and when it last said it was alive."""

    __tablename__ = "server_instance"

    #: The instance id (``instance_id`` of the settings, or a random one per process).
    id: str = Field(primary_key=True, max_length=64)
    hostname: str = Field(default="", max_length=255)
    pid: int = Field(default=0)
    version: str = Field(default="", max_length=32)
    started_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    #: Refreshed every ``instance_heartbeat_s``; a value that stops changing means the
    #: process is gone.
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
