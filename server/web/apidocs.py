"""The API's documentation pages, Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

FastAPI's defaults load both from a CDN, which leaves ``/docs`` blank on a
center without internet access. Their files come from npm like the console's
(``make web-assets``, pinned in ``frontend/package-lock.json``) and are served
from the package's own ``/static/vendor``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

VENDOR = "/static/vendor"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def mount_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI and ReDoc for ``app``'s OpenAPI schema from local files.

    The app must be created with ``docs_url=None, redoc_url=None``.
    """
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR}/favicon-32x32.png",
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{VENDOR}/redoc.standalone.js",
            redoc_favicon_url=f"{VENDOR}/favicon-32x32.png",
            with_google_fonts=False,
        )
