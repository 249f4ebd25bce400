"""The session API's answers that need no device: validation, roles, sessions off, recordings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from server.sessions.recording import Recording, file_digest, validate_asciicast


def test_sessions_are_off_without_a_ca(
    client: TestClient, auth: Callable[[str], dict[str, str]]
) -> None:
    answer = client.post(
        "/api/v1/devices/mfp-1/sessions", json={"reason": "jam"}, headers=auth("operator")
    )
    assert answer.status_code == 503
    assert "fieldlink ca init" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "x" * 1025}, "reason"),
        ({"reason": "ok", "services": "web"}, "services"),
        ({"reason": "ok", "incident_id": "seven"}, "incident_id"),
    ],
)
def test_a_bad_session_request_is_a_422_naming_the_field(
    client: TestClient, auth: Callable[[str], dict[str, str]], body: dict[str, object], field: str
) -> None:
    answer = client.post("/api/v1/devices/mfp-1/sessions", json=body, headers=auth("operator"))
    assert answer.status_code == 422
    assert field in json.dumps(answer.json()["detail"])


def test_unknown_sessions_are_404(
    client: TestClient, auth: Callable[[str], dict[str, str]]
) -> None:
    for method, path in (
        ("GET", "/api/v1/sessions/ses-0"),
        ("DELETE", "/api/v1/sessions/ses-0"),
        ("GET", "/api/v1/sessions/ses-0/recording"),
    ):
        answer = client.request(method, path, headers=auth("operator"))
        assert answer.status_code == 404, (method, path, answer.text)
    listed = client.get("/api/v1/sessions", headers=auth("operator"))
    assert listed.json() == {"items": [], "count": 0}


def _close_code(client: TestClient, path: str, headers: dict[str, str]) -> int:
    """The close code a session socket answers with (accepted, then closed)."""
    with client.websocket_connect(path, headers=headers) as socket:
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_bytes()
    return closed.value.code


def test_session_sockets_need_a_valid_token(
    client: TestClient, auth: Callable[[str], dict[str, str]]
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        assert _close_code(client, "/api/v1/sessions/ses-0/terminal", headers) == 4401
    operator = auth("operator")
    assert _close_code(client, "/api/v1/sessions/ses-0/forward/web", operator) == 4404


def test_the_tunnel_endpoint_refuses_an_unknown_session(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(
            "/api/v1/tunnel/ses-0", headers={"Authorization": "Bearer whatever-token"}
        ),
    ):
        pass
    assert refused.value.code == 1008


def test_a_recording_is_asciicast_v2_with_whole_characters(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "ses-1.cast"
    recording = Recording(path, cols=80, rows=24, term="xterm-256color", title="mfp-1 ses-1")
    word = "été ✓".encode()
    recording.output(word[:2])  # "é" is split across two reads
    recording.output(word[2:])
    recording.resize(120, 40)
    recording.output(b"\xff done")  # not UTF-8: replaced, never an error
    recording.marker("shell 2")
    recording.close()
    recording.close()  # idempotent
    assert path.stat().st_mode & 0o777 == 0o600
    assert validate_asciicast(path) == 5
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (80, 24)
    assert header["env"]["TERM"] == "xterm-256color"
    shown = "".join(json.loads(line)[2] for line in lines[1:] if json.loads(line)[1] == "o")
    assert shown == "été ✓\ufffd done"
    digest, size = file_digest(path)
    assert size == path.stat().st_size
    assert len(digest) == 64


def test_a_broken_recording_is_not_asciicast(tmp_path: Path) -> None:
    path = tmp_path / "bad.cast"
    path.write_text('{"version": 1}\n')
    with pytest.raises(ValueError, match="header"):
        validate_asciicast(path)
    path.write_text('{"version": 2, "width": 80, "height": 24}\n[1.0, "o", "a"]\n[0.5, "o", "b"]\n')
    with pytest.raises(ValueError, match="event"):
        validate_asciicast(path)
