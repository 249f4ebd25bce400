"""The web console: server-rendered pages for operators, managers and administrators.

Pages are Jinja2 templates rendered from the database; what they change goes
through the same ``/api/v1`` routes (and role checks) as scripts use, called by
a little JavaScript with the session cookie and its CSRF token. The front-end
packages (xterm.js, uPlot, asciinema-player) are installed from npm by
``make web-assets`` into ``static/vendor/``: nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.web.auth import ConsoleRedirect, redirect_to
from server.web.pages import router

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR", "mount_console", "router"]


def mount_console(app: FastAPI) -> None:
    """Serve the console's pages at ``/`` and its static files at ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(ConsoleRedirect, redirect_to)
