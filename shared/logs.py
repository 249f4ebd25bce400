"""The one logging configuration: JSON lines when not on a terminal, plain text on one."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from typing import Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra`` context (device, session) as fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", *, json_lines: bool | None = None) -> None:
    """Configure the root logger once for a daemon (agent or server)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        formatter: logging.Formatter = JsonLineFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries stay at warning unless asked for debug.
    for name in ("aiomqtt", "paho", "asyncssh", "uvicorn.access", "websockets", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def quiet_library_warnings() -> None:
    """Keep Python warnings off a user's terminal, unless they asked for them.

    A library's deprecation notice (cryptography about asyncssh, uvicorn about
    websockets) means nothing to an operator typing ``fieldlink --help`` and would
    hide the command's own output; the developers see them in the test suite,
    which turns warnings into errors. ``python -W ...`` or ``PYTHONWARNINGS``
    still show them.
    """
    if sys.warnoptions:
        return
    warnings.simplefilter("ignore")
