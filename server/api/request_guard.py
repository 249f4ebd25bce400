"""Requests that are not text are refused before any route reads them.

Two things no route should have to check one by one:

* **Size.** A JSON or form body larger than ``max_request_body_bytes`` is refused
  with 413, whether it declares its length or streams it in chunks, before it is
  parsed: nothing buffers a hostile megabyte body. CSV imports
  (``text/csv``, ``multipart/form-data``) have their own, larger cap
  (``incident_import_max_bytes``) and pass through.
* **NUL characters.** ``\\u0000`` in a JSON string, ``%00`` in a form or a query
  string, or a NUL in the path. PostgreSQL cannot store a NUL in a text value, so
  without this a NUL turned into a 500 there and into stored garbage on SQLite;
  now it is a 422 on both, and nothing is written.

A NUL is answered in FastAPI's validation shape, naming where it was
(``{"detail": [{"type": "value_error", "loc": ["body", "region"], "msg": ...}]}``); an
oversized body as ``{"detail": "..."}``; for the console's forms too. WebSockets pass
through (their frames are checked by their own routes).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``\u0000`` as JSON writes it, not preceded by an escaping backslash.
_JSON_NUL: Final = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_FORM_NUL: Final = b"%00"
_CHECKED_TYPES: Final = ("application/json", "application/x-www-form-urlencoded")
NUL_MESSAGE: Final = "a NUL character (U+0000) is not text"


class RequestGuard:
    """ASGI middleware: refuses oversized JSON/form bodies (413) and NUL characters (422)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope.get("path", ""):
            await _refuse(send, 422, nul_detail(["path"]))
            return
        if _FORM_NUL in query.lower():
            await _refuse(send, 422, nul_detail(["query", *_form_field(query)]))
            return
        content_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        if content_type not in _CHECKED_TYPES:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(send, 413, self._too_large())
            return
        body = bytearray()
        disconnected: Message | None = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = message
                break
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _refuse(send, 413, self._too_large())
                return
            if not message.get("more_body", False):
                break
        if disconnected is None and _holds_nul(bytes(body), content_type):
            where = _json_path(bytes(body)) if content_type == "application/json" else None
            await _refuse(send, 422, nul_detail(["body", *(where or _form_field(bytes(body)))]))
            return
        await self.app(scope, _replay(bytes(body), disconnected, receive), send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes"


def _holds_nul(body: bytes, content_type: str) -> bool:
    if b"\x00" in body:
        return True
    if content_type == "application/json":
        return _JSON_NUL.search(body) is not None
    return _FORM_NUL in body.lower()


def nul_detail(loc: list[str | int]) -> list[dict[str, Any]]:
    """The 422 ``detail`` of a NUL found at ``loc`` (FastAPI's validation shape)."""
    return [{"type": "value_error", "loc": loc, "msg": NUL_MESSAGE, "input": None}]


def _form_field(encoded: bytes) -> list[str | int]:
    """The first field of a query or form whose name or value holds a NUL."""
    for name, value in parse_qsl(encoded.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return [name.replace("\x00", "")]
    return []


def _json_path(body: bytes) -> list[str | int] | None:
    """Where in a JSON document the first NUL is (``None``: not JSON; the route says so)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None

    def find(node: Any, path: list[str | int]) -> list[str | int] | None:
        if isinstance(node, str):
            return path if "\x00" in node else None
        if isinstance(node, dict):
            for key, value in node.items():
                if "\x00" in key:
                    return [*path, key.replace("\x00", "")]
                if (found := find(value, [*path, key])) is not None:
                    return found
        if isinstance(node, list):
            for index, value in enumerate(node):
                if (found := find(value, [*path, index])) is not None:
                    return found
        return None

    return find(document, []) or []


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _replay(body: bytes, disconnected: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real stream."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if disconnected is not None:
                return disconnected
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, status: int, detail: str | list[dict[str, Any]]) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
