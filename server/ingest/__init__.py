"""Ingest: the MQTT consumer that keeps the fleet registry, telemetry history and alerts.

The app's lifespan runs one :class:`~server.ingest.service.IngestService` per process.
"""

from server.ingest.service import IngestService

__all__ = ["IngestService"]
