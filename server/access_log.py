"""The HTTP access log: one JSON line per request or WebSocket, without secrets.

Each line carries the method, the path, the query with secret-looking values
replaced (every value on the CTI lookup paths: a caller's number), the status
(101 and the close code for a WebSocket), the bytes sent,
the duration, the client address (a trusted proxy's ``X-Forwarded-For``, see
``forwarded_allow_ips``) and the user agent. Never the ``Authorization`` header,
cookies, request bodies or a token in the path (``/api/v1/surveys/{token}``,
``/survey/{token}``, an approval link's ``/approve/{token}``).

On by default (``access_log``), into the server's log or, with
``access_log_file``, a file of its own.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import JsonLineFormatter

logger = logging.getLogger("fieldlink.access")

#: Query parameters whose values are never logged (a substring of the name, any case).
SECRET_PARAMS: Final = ("token", "password", "passwd", "secret", "key", "sig", "code", "csrf")
REDACTED: Final = "[redacted]"
#: Paths whose last segment is a secret.
_SECRET_PATHS: Final = re.compile(r"^(/api/v1/surveys/|/survey/|/approve/)[^/]+")
#: Paths whose every query value is personal data (a caller's phone number): all redacted.
PERSONAL_QUERY_PATHS: Final = frozenset({"/desk/call", "/api/v1/lookup"})


def redact_query(query: str, path: str = "") -> str:
    """The query string with the values of secret-looking parameters replaced.

    On :data:`PERSONAL_QUERY_PATHS` (the CTI screen-pop and lookup, whose ``ani``
    is a caller's phone number) every value is replaced.
    """
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    personal = path.rstrip("/") in PERSONAL_QUERY_PATHS
    safe = [
        (
            name,
            REDACTED
            if personal or any(s in name.lower() for s in SECRET_PARAMS)
            else _personal_link(value),
        )
        for name, value in pairs
    ]
    return urlencode(safe, safe="[]")


def _personal_link(value: str) -> str:
    """A link to a personal path (the log-in form's ``next``) with its query redacted."""
    link_path, mark, _ = value.partition("?")
    if mark and link_path.rstrip("/") in PERSONAL_QUERY_PATHS:
        return f"{link_path}?{REDACTED}"
    return value


def redact_path(path: str) -> str:
    """The path with a secret segment (a survey's token) replaced."""
    return _SECRET_PATHS.sub(rf"\g<1>{REDACTED}", path)


def open_access_log(path: Path | None) -> None:
    """Send the access log to ``path`` (JSON lines), or into the server's log when ``None``."""
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if path is None:
        logger.propagate = True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    formatter = JsonLineFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.propagate = False


class AccessLogMiddleware:
    """Pure ASGI middleware: logs each HTTP request and WebSocket when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "bytes": 0, "close_code": None}

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                seen["status"] = message["status"]
            elif kind == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            elif kind == "websocket.accept":
                seen["status"] = 101
            elif kind == "websocket.send":
                seen["bytes"] += len(message.get("bytes") or b"") + len(
                    (message.get("text") or "").encode()
                )
            elif kind == "websocket.close":
                seen["close_code"] = message.get("code", 1000)
                if seen["status"] is None:
                    seen["status"] = 403  # refused before the handshake completed
            elif kind == "websocket.http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            if seen["status"] is None:
                seen["status"] = 500
            raise
        finally:
            self._log(scope, seen, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, seen: dict[str, Any], elapsed: float) -> None:
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        client = scope.get("client")
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        path = redact_path(scope.get("path", ""))
        query = redact_query(scope.get("query_string", b"").decode("latin-1"), path)
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query or None,
            "status": seen["status"],
            "bytes": seen["bytes"],
            "duration_ms": round(elapsed * 1000, 2),
            "client": client[0] if client else None,
            "user_agent": headers.get("user-agent", b"").decode("latin-1")[:256] or None,
            "http": scope.get("http_version"),
        }
        if seen["close_code"] is not None:
            fields["close_code"] = seen["close_code"]
        logger.info("%s %s %s", method, path, seen["status"], extra=fields)
