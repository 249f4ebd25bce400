"""Serve the application with uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from server.config import ServerSettings
from server.main import create_app

logger = logging.getLogger(__name__)


async def serve(settings: ServerSettings) -> None:
    """Run the HTTP server (and, through the lifespan, everything else) until stopped."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    await server.serve()
