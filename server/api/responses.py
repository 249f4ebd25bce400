"""The error answers every ``/api/v1`` route may give, as the OpenAPI schema documents them.

Every error is JSON ``{"detail": ...}``: a sentence for 400/401/403/404/409/413/415/429/503,
and for 422 either a sentence or the list of what is wrong, each item with ``loc``, ``msg``
and ``type`` (FastAPI's validation errors; the CSV import adds ``line`` and ``field``).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict

#: The largest integer the database stores (SQLite and PostgreSQL ``BIGINT``): every
#: integer the API accepts (ids, offsets) is bounded by it, never an overflow (500).
DB_INT_MAX: Final = 2**63 - 1


class ErrorResponse(BaseModel):
    """An error: ``detail`` says what went wrong."""

    detail: str


class ErrorItem(BaseModel):
    """One thing wrong with a request."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """A request that cannot be processed: a sentence, or every problem found."""

    detail: str | list[ErrorItem]


def error_response(description: str) -> dict[str, Any]:
    """An error answer for a route's OpenAPI ``responses``: ``{"detail": ...}``, described."""
    return {"model": ErrorResponse, "description": description}


#: The responses documented on every ``/api/v1`` route.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: error_response("Bad request"),
    401: error_response("No or bad credentials"),
    403: error_response("The role does not allow this"),
    404: error_response("Not found"),
    409: error_response("Conflict with the current state"),
    422: {"model": ValidationErrorResponse, "description": "Invalid input"},
    503: error_response("A part the server needs is unavailable"),
}

#: A query text without control characters (PostgreSQL refuses a NUL in a text value: a
#: query parameter holding one must be a 422, not a database error).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
