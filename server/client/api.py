"""The one typed client of ``/api/v1`` that every operator command goes through.

``fieldlink login`` stores the server URL and a bearer token in
``$FIELDLINK_CREDENTIALS`` (default ``~/.config/fieldlink/credentials.json``,
mode 0600); the other client commands read it. Every answer of the server is
turned into an error in one place, :func:`raise_for_status`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx2 as httpx

from shared import exit_codes
from shared.cli_language import tr
from shared.errors import AuthError, FieldlinkError, UnavailableError
from shared.tunnel import ws_url

#: How long one ``GET /sessions/{id}?wait_s=`` may wait on the server.
LONG_POLL_S: Final = 25.0


def credentials_path() -> Path:
    """Where ``fieldlink login`` keeps the server URL and token."""
    env = os.environ.get("FIELDLINK_CREDENTIALS")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "fieldlink" / "credentials.json"


def save_credentials(server: str, token: str, username: str | None) -> Path:
    """Write the credentials file with mode 0600 (created so, never widened)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"server": server.rstrip("/"), "token": token, "username": username}, handle)
    os.chmod(path, 0o600)
    return path


class ApiError(FieldlinkError):
    """The server refused a request; the message is its ``detail``.

    Its exit status follows the HTTP status (:func:`shared.exit_codes.for_http_status`):
    404 is "not found" (3), 403 "not allowed" (4), 409 "conflict" (5)... in every command.
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_codes.for_http_status(status)


def part(value: str) -> str:
    """One path segment, quoted so that an id cannot reach another route."""
    return quote(value, safe="")


def error_detail(response: httpx.Response) -> str:
    """The server's ``detail`` as one line (FastAPI's validation list joined)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail)


def raise_for_status(response: httpx.Response) -> None:
    """The one mapping of an HTTP error answer to fieldlink's errors.

    Raises:
        AuthError: on 401 (log in again).
        ApiError: on any other 4xx or 5xx, with the status and the server's detail.
    """
    if response.status_code < 400:
        return
    detail = error_detail(response)
    if response.status_code == 401:
        msg = tr("%(detail)s (run `fieldlink login` again)", detail=detail)
        raise AuthError(msg)
    msg = f"{response.status_code}: {detail}"
    raise ApiError(msg, status=response.status_code)


class ApiClient:
    """Calls ``/api/v1`` with the stored (or given) bearer token."""

    def __init__(
        self, server: str, token: str | None, timeout: float = 30.0, username: str | None = None
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        #: Who logged in (``fieldlink login`` saved it), for "my open session" look-ups.
        self.username = username
        self._http = httpx.Client(base_url=self.server, headers=self.auth_headers, timeout=timeout)

    @classmethod
    def from_credentials(cls, server: str | None = None) -> ApiClient:
        """A client for the server and token ``fieldlink login`` saved.

        Raises:
            AuthError: when nobody has logged in.
        """
        path = credentials_path()
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            msg = tr("not logged in: run `fieldlink login --server URL` first")
            raise AuthError(msg) from exc
        return cls(server or saved["server"], saved.get("token"), username=saved.get("username"))

    @property
    def auth_headers(self) -> dict[str, str]:
        """The bearer header requests and the session sockets authenticate with."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            msg = tr("cannot reach %(server)s: %(error)s", server=self.server, error=exc)
            raise UnavailableError(msg) from exc
        raise_for_status(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; answer the decoded JSON body (or text) or raise with the detail.

        Raises:
            UnavailableError: when the server cannot be reached.
            AuthError: on 401.
            ApiError: on any other 4xx or 5xx.
        """
        response = self._send(method, path, **kwargs)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def download(self, path: str) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers of ``GET /api/v1{path}`` (errors as :meth:`request`)."""
        response = self._send("GET", path)
        return response.content, dict(response.headers)

    def ws_url(self, path: str, **query: Any) -> str:
        """``ws(s)://server/api/v1{path}?query`` for a session socket."""
        return ws_url(self.server, f"/api/v1{path}") + (f"?{urlencode(query)}" if query else "")

    # -- accounts ---------------------------------------------------------------------------

    def login(self, username: str, password: str, otp: str | None = None) -> str:
        """The OAuth2 password flow (with ``otp``, the two-factor code): a bearer token."""
        data = {"username": username, "password": password}
        if otp:
            data["otp"] = otp
        answer = self.request("POST", "/auth/token", data=data)
        return str(answer["access_token"])

    def me(self) -> dict[str, Any]:
        """``GET /auth/me``: who the token belongs to."""
        answer: dict[str, Any] = self.request("GET", "/auth/me")
        return answer

    def change_password(self, current: str, new: str) -> None:
        """``POST /auth/password`` (the caller's other logins end)."""
        self.request(
            "POST", "/auth/password", json={"current_password": current, "new_password": new}
        )

    # -- the fleet --------------------------------------------------------------------------

    def devices(self, **params: Any) -> dict[str, Any]:
        """``GET /devices``: one page, ``{"items": [...], "count": N}``."""
        answer: dict[str, Any] = self.request("GET", "/devices", params=params)
        return answer

    def lookup(self, ani: str, customer_no: str | None = None) -> dict[str, Any]:
        """``GET /lookup``: who is calling (customer, devices, open incidents)."""
        params = {"ani": ani, **({"customer_no": customer_no} if customer_no else {})}
        answer: dict[str, Any] = self.request("GET", "/lookup", params=params)
        return answer

    def customers(self, **params: Any) -> dict[str, Any]:
        """``GET /customers``: one page, ``{"items": [...], "count": N}``."""
        answer: dict[str, Any] = self.request("GET", "/customers", params=params)
        return answer

    def customer(self, number: str) -> dict[str, Any]:
        """``GET /customers/{number}``: one customer with its contacts, sites and devices."""
        answer: dict[str, Any] = self.request("GET", f"/customers/{part(number)}")
        return answer

    def calls(self, **params: Any) -> dict[str, Any]:
        """``GET /calls``: one page of recorded calls, newest first."""
        answer: dict[str, Any] = self.request("GET", "/calls", params=params)
        return answer

    # -- remote sessions --------------------------------------------------------------------

    def open_session(
        self,
        device_id: str,
        *,
        reason: str,
        incident_id: int | None = None,
        services: list[str] | None = None,
        keepalive: bool = False,
    ) -> dict[str, Any]:
        """``POST /devices/{id}/sessions``: the new session (``requested``).

        With ``keepalive`` the caller promises heartbeats (:meth:`heartbeat`) while it
        uses the session; the server closes it (``operator_gone``) when they stop.
        """
        body: dict[str, Any] = {"reason": reason}
        if keepalive:
            body["keepalive"] = True
        if incident_id is not None:
            body["incident_id"] = incident_id
        if services:
            body["services"] = services
        session: dict[str, Any] = self.request(
            "POST",
            f"/devices/{part(device_id)}/sessions",
            json=body,
            headers={"X-Fieldlink-Origin": "cli"},
        )
        return session

    def session(self, session_id: str, *, since: str | None = None) -> dict[str, Any]:
        """One session; with ``since``, once its state has left ``since`` (or a long poll)."""
        params: dict[str, Any] = {}
        timeout = None
        if since is not None:
            params = {"wait_s": LONG_POLL_S, "since": since}
            timeout = LONG_POLL_S + 30.0
        answer: dict[str, Any] = self.request(
            "GET",
            f"/sessions/{part(session_id)}",
            params=params,
            **({"timeout": timeout} if timeout else {}),
        )
        return answer

    def sessions(self, **params: Any) -> dict[str, Any]:
        """``GET /sessions``: one page, newest first."""
        answer: dict[str, Any] = self.request("GET", "/sessions", params=params)
        return answer

    def my_open_session(self, device_id: str) -> dict[str, Any] | None:
        """The caller's newest open session on ``device_id``, if any."""
        username = self.username or str(self.me()["username"])
        page = self.sessions(device_id=device_id, operator=username, state="open", limit=1)
        items: list[dict[str, Any]] = page.get("items") or []
        return items[0] if items else None

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        """``POST /sessions/{id}/heartbeat``: ``{"session_id", "open", "timeout_s"}``."""
        answer: dict[str, Any] = self.request("POST", f"/sessions/{part(session_id)}/heartbeat")
        return answer

    def close_session(self, session_id: str) -> dict[str, Any]:
        """``DELETE /sessions/{id}``: the closed session."""
        answer: dict[str, Any] = self.request("DELETE", f"/sessions/{part(session_id)}")
        return answer

    def exec(self, session_id: str, command: str, timeout_s: float) -> dict[str, Any]:
        """``POST /sessions/{id}/exec``: ``{"exit_status", "stdout", "stderr"}``."""
        answer: dict[str, Any] = self.request(
            "POST",
            f"/sessions/{part(session_id)}/exec",
            json={"command": command, "timeout_s": timeout_s},
            timeout=timeout_s + 30.0,
        )
        return answer

    def recording(self, session_id: str) -> tuple[bytes, dict[str, str]]:
        """A closed session's asciicast and the headers (``x-content-sha256``)."""
        return self.download(f"/sessions/{part(session_id)}/recording")

    # -- the manager's figures --------------------------------------------------------------

    def kpis(self, *, start: str, end: str, group_by: str) -> dict[str, Any]:
        """``GET /kpis`` for ``[start, end)`` (ISO 8601), grouped."""
        answer: dict[str, Any] = self.request(
            "GET", "/kpis", params={"from": start, "to": end, "group_by": group_by}
        )
        return answer

    def escalate_incident(
        self, incident_id: int, *, tier: int | None, assignee: str | None, note: str
    ) -> dict[str, Any]:
        """``POST /incidents/{id}/escalate``: the incident as changed."""
        body: dict[str, Any] = {"note": note}
        if tier is not None:
            body["tier"] = tier
        if assignee is not None:
            body["assignee"] = assignee
        answer: dict[str, Any] = self.request(
            "POST", f"/incidents/{int(incident_id)}/escalate", json=body
        )
        return answer

    def export_incidents(self, *, on: str, start: str | None, end: str | None) -> str:
        """``GET /incidents/export``: the CSV text."""
        params = {"on": on}
        if start is not None:
            params["from"] = start
        if end is not None:
            params["to"] = end
        return str(self.request("GET", "/incidents/export", params=params) or "")
