"""Shell recordings as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/).

One file per session: a JSON header line, then one JSON array per event,
``[seconds_since_start, "o", text]`` for output and ``[t, "r", "COLSxROWS"]``
for a resize. Only what the device printed is recorded, not what the
operator typed (passwords typed at a prompt are not echoed, so they stay
out of the file). The file is written as the session goes (a crash keeps
what was shown so far) with mode 0600, and its SHA-256 goes into the session
row and the audit log when it is closed.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, Final

from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: MIME type of asciicast v2 (asciinema's own).
CONTENT_TYPE: Final = "application/x-asciicast"


class Recording:
    """An asciicast v2 file being written.

    Args:
        path: Where the file goes (created, 0600; its folder 0700).
        cols: Terminal width at the start.
        rows: Terminal height at the start.
        term: The ``TERM`` of the terminal.
        title: A title for players (the device and the session).
    """

    def __init__(self, path: Path, *, cols: int, rows: int, term: str, title: str) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        self._start = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        header: dict[str, Any] = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(utcnow().timestamp()),
            "env": {"TERM": term, "SHELL": "/bin/sh"},
            "title": title,
        }
        self._write(header)

    def marker(self, label: str) -> None:
        """Record a marker (a second shell in the same session begins, for example)."""
        self._write([self._elapsed(), "m", label])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._file is None

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._start, 6)

    def _write(self, record: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")

    def output(self, data: bytes) -> None:
        """Record bytes the terminal showed (split UTF-8 sequences are joined)."""
        text = self._decoder.decode(data)
        if text:
            self._write([self._elapsed(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        """Record a terminal resize."""
        self._write([self._elapsed(), "r", f"{cols}x{rows}"])

    def flush(self) -> None:
        """Push what was recorded to the file."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Finish the file (flushes a trailing partial character as U+FFFD)."""
        if self._file is None:
            return
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._write([self._elapsed(), "o", tail])
        self._file.close()
        self._file = None


def file_digest(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a finished recording."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def validate_asciicast(path: Path) -> int:
    """Check that ``path`` is asciicast v2; return its number of events.

    Raises:
        ValueError: The header or an event is not asciicast v2.
    """
    with path.open(encoding="utf-8") as handle:
        header = json.loads(handle.readline())
        if header.get("version") != 2 or not isinstance(header.get("width"), int):
            msg = "not an asciicast v2 header"
            raise ValueError(msg)
        count = 0
        last = 0.0
        for line in handle:
            event = json.loads(line)
            ok_shape = (
                isinstance(event, list)
                and len(event) == 3
                and isinstance(event[0], int | float)
                and event[1] in ("o", "i", "r", "m")
                and isinstance(event[2], str)
            )
            if not ok_shape or event[0] < last:
                msg = f"bad asciicast event: {line[:80]!r}"
                raise ValueError(msg)
            last = float(event[0])
            count += 1
    return count
