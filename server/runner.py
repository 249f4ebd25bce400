"""Serve the application with uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from server.config import ServerSettings
from server.main import create_app

logger = logging.getLogger(__name__)


async def serve(settings: ServerSettings) -> None:
    """Run the HTTP server (and, through the lifespan, everything else) until stopped."""
    config = uvicorn_config(create_app(settings), settings)
    server = uvicorn.Server(config)
    await server.serve()


def uvicorn_config(app: FastAPI, settings: ServerSettings) -> uvicorn.Config:
    """uvicorn's configuration for ``settings``.

    Proxy headers are believed only from ``forwarded_allow_ips``: uvicorn's own
    default (any loopback peer, or ``$FORWARDED_ALLOW_IPS``) would let anything on
    the host claim any client address, past the login limits and into the audit log.
    """
    trusted = [address.strip() for address in settings.forwarded_allow_ips if address.strip()]
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
    )
