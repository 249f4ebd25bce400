"""CSV through the API: uploads (incidents, customers, devices), one way in for every
importer, and the answer that hands a CSV file out (:func:`csv_file`, :func:`csv_stream`).

A file comes as ``text/csv`` or as the file of a ``multipart/form-data`` upload, is
refused (413) beyond ``incident_import_max_bytes`` however it is framed, is spooled
(in memory up to a point, then to a temporary file) and imported in a worker thread
as UTF-8 lines; a file the importer rejects is a 422 naming each bad line and field.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Final, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from server.api.responses import error_response
from server.incidents.csv_io import CsvImportInvalid, decode_lines

_T = TypeVar("_T")

#: The error answers of an import route, for its OpenAPI entry.
CSV_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    413: error_response("Larger than incident_import_max_bytes"),
    415: error_response("Not text/csv nor a multipart upload"),
}
#: The request body of an import route, for its OpenAPI entry (read by hand, not by FastAPI).
CSV_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
#: What a CSV download is sent as.
CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"
_CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel")
_NO_FILE: Final = {"loc": ["body", "file"], "msg": "no CSV file in the form", "type": "missing"}
#: Up to this much of an import stays in memory; the rest is spooled to a temporary file.
_SPOOL_IN_MEMORY = 1024 * 1024


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


def csv_file(text: str, filename: str) -> Response:
    """A CSV made in memory, for the browser to save as ``filename``."""
    return Response(text, media_type=CSV_MEDIA_TYPE, headers=_attachment(filename))


def csv_stream(chunks: Iterable[str], filename: str) -> StreamingResponse:
    """A CSV sent as it is written, for the browser to save as ``filename``."""
    return StreamingResponse(chunks, media_type=CSV_MEDIA_TYPE, headers=_attachment(filename))


async def import_csv(request: Request, run: Callable[[Iterator[str]], _T]) -> _T:
    """Read the request's CSV (capped at ``incident_import_max_bytes``) and ``run`` the
    import on its lines in a worker thread; its result."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit: int = request.app.state.settings.incident_import_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    capped = Request(request.scope, receive=_capped_receive(request, limit))
    if content_type == "multipart/form-data":
        form = await capped.form()
        try:
            uploads = [v for v in form.values() if isinstance(v, UploadFile)]
            if not uploads:
                raise HTTPException(
                    status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                    detail=[_NO_FILE],
                )
            return await _imported(uploads[0].file, run)
        finally:
            await form.close()
    if content_type not in _CSV_TYPES:
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send the CSV as text/csv or as the file of a multipart/form-data upload",
        )
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        async for chunk in capped.stream():
            spool.write(chunk)
        return await _imported(spool, run)


async def _imported(spool: IO[bytes], run: Callable[[Iterator[str]], _T]) -> _T:
    """Import the spooled file, read as a stream of UTF-8 text."""
    spool.seek(0)
    try:
        return await run_in_threadpool(run, decode_lines(spool))
    except CsvImportInvalid as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", f"line {p.line}", *([p.field] if p.field else [])],
                    "msg": p.message,
                    "type": "value_error",
                    "line": p.line,
                    "field": p.field,
                }
                for p in exc.problems
            ],
        ) from exc


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the file is larger than the import limit of {limit} bytes "
        "(incident_import_max_bytes): split it",
    )


def _capped_receive(request: Request, limit: int) -> Receive:
    """The request's ``receive``, refusing (413) once more than ``limit`` bytes came."""
    seen = 0
    receive = request.receive

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return capped
