"""A small client of the fieldlink API for the operator's and manager's command line.

``fieldlink login`` stores the server URL and a bearer token in
``$FIELDLINK_CREDENTIALS`` (default ``~/.config/fieldlink/credentials.json``,
mode 0600); the other client commands read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx2 as httpx

from shared.errors import AuthError, FieldlinkError, UnavailableError


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
    """The server refused a request; the message is its ``detail``."""


class ApiClient:
    """Calls ``/api/v1`` with the stored (or given) bearer token."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

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
            msg = "not logged in: run `fieldlink login --server URL` first"
            raise AuthError(msg) from exc
        return cls(server or saved["server"], saved.get("token"))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; answer the decoded JSON body or raise with the server's detail.

        Raises:
            UnavailableError: when the server cannot be reached.
            AuthError: on 401.
            ApiError: on any other 4xx or 5xx.
        """
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            msg = f"cannot reach {self.server}: {exc}"
            raise UnavailableError(msg) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                    for d in detail
                )
            if response.status_code == 401:
                msg = f"{detail} (run `fieldlink login` again)"
                raise AuthError(msg)
            msg = f"{response.status_code}: {detail}"
            raise ApiError(msg)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def login(self, username: str, password: str) -> str:
        """The OAuth2 password flow: a bearer token for this user."""
        answer = self.request(
            "POST", "/auth/token", data={"username": username, "password": password}
        )
        return str(answer["access_token"])
