"""Which client address the server believes: proxy headers only from configured proxies."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from fastapi import FastAPI, Request

from server.config import ServerSettings
from server.runner import uvicorn_config
from tests.fixtures.ports import free_port
from tests.fixtures.uvicorn_app import served


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None}

    return app


async def _client_seen(settings: ServerSettings, headers: dict[str, str]) -> str:
    config = uvicorn_config(_echo_app(), settings)
    config.lifespan = "off"
    async with served(config), httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{settings.http_port}/whoami", headers=headers)
    client_host: str = answer.json()["client"]
    return client_host


FORGED = {"X-Forwarded-For": "203.0.113.9"}


async def test_a_loopback_peer_cannot_claim_another_address_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvicorn believes loopback peers (or $FORWARDED_ALLOW_IPS) unless told otherwise.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    settings = ServerSettings(http_port=free_port())
    assert settings.forwarded_allow_ips == []
    assert await _client_seen(settings, FORGED) == "127.0.0.1"


async def test_a_configured_proxy_is_believed() -> None:
    settings = ServerSettings(http_port=free_port(), forwarded_allow_ips=["127.0.0.1"])
    assert await _client_seen(settings, FORGED) == "203.0.113.9"
    others = ServerSettings(http_port=free_port(), forwarded_allow_ips=["10.0.0.0/8"])
    assert await _client_seen(others, FORGED) == "127.0.0.1"
