"""The one HTTP call of the device's identity: a JSON POST to the center, with one-line errors.

Enrollment (:mod:`agent.identity.enroll`) and renewal (:mod:`agent.identity.renew`)
both POST a JSON body and read a JSON object back, over https verified against a
given CA bundle (or the system's). Each names its own action in the errors, so a
refusal reads ``enrollment refused by the server (HTTP 409): ...`` or
``certificate renewal refused by the server (HTTP 403): ...``. Standard library
only: the idle agent may import this module.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from shared.errors import FieldlinkError, UnavailableError

#: The most the device reads of an answer (a certificate chain and a few keys).
MAX_RESPONSE_BYTES: Final = 256 * 1024


def response_detail(body: bytes) -> str:
    """The ``detail`` of a JSON error answer, in one line ("" when it has none)."""
    try:
        detail: Any = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    if isinstance(detail, list):
        # FastAPI validation errors: name the first field and its problem.
        first = detail[0] if detail and isinstance(detail[0], dict) else {}
        where = ".".join(str(part) for part in first.get("loc", []) if part != "body")
        return f"{where}: {first.get('msg', '')}".strip(": ")
    return str(detail) if detail else ""


def post_json(
    url: str,
    body: dict[str, str],
    *,
    ca_file: Path | None,
    timeout_s: float,
    action: str,
    failure: type[FieldlinkError],
) -> dict[str, Any]:
    """POST ``body`` as JSON and return the JSON object answered (blocking; run in a thread).

    Args:
        url: An ``http(s)://`` URL (the caller checked the scheme).
        body: The request body.
        ca_file: The CA bundle to verify an https server with (default: the system's).
        timeout_s: Seconds to wait for the connection and the answer.
        action: What the call is, as errors name it (``enrollment``).
        failure: The error raised when the server refuses or answers nonsense.

    Raises:
        UnavailableError: The server cannot be reached.
        FieldlinkError: ``failure``, when the server refuses (its ``detail`` is
            quoted), or its answer is too large or not a JSON object.
    """
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked to be http(s)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = response_detail(exc.read(MAX_RESPONSE_BYTES))
        reason = detail or exc.reason or "no detail"
        msg = f"{action} refused by the server (HTTP {exc.code}): {reason}"
        raise failure(msg) from None
    except urllib.error.URLError as exc:
        msg = f"cannot reach the server at {url}: {exc.reason}"
        raise UnavailableError(msg) from None
    except (TimeoutError, OSError) as exc:
        msg = f"cannot reach the server at {url}: {exc}"
        raise UnavailableError(msg) from None
    if len(raw) > MAX_RESPONSE_BYTES:
        msg = f"{action}: the server's answer is too large"
        raise failure(msg)
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        msg = f"{action}: the server's answer is not a JSON object"
        raise failure(msg)
    return data
