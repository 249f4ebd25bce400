"""The device's memory of accepted command ids, so that no signed command runs twice.

:func:`shared.signing.verify_command` records each command it accepts here;
the agent keeps the cache in a small JSON file under its ``state_dir``.
Standard library only.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from shared.command_rules import DEFAULT_CLOCK_SKEW, ReplayedCommand
from shared.ids import isoformat_z, utcnow
from shared.keyfiles import write_file_atomic

logger = logging.getLogger(__name__)

#: Ids the replay cache holds at most.
DEFAULT_REPLAY_CACHE_SIZE: Final = 10_000


class ReplayCache:
    """Ids of commands already accepted, each kept until its command expires.

    Bounded: when full, it forgets the ids that expire soonest, and from then
    on refuses any command that expires no later than the latest one it forgot
    (``floor``), so forgetting never reopens a replay window. Commands expire
    later as time goes on, so fresh commands are not affected.

    With ``path``, the cache is kept in a small JSON file (rewritten
    atomically on each accepted command), so an agent restart does not reopen
    a replay window either.

    Args:
        path: The file to persist to, or ``None`` to keep it in memory only.
        max_entries: How many ids to hold at most.
    """

    def __init__(self, path: Path | None = None, max_entries: int = DEFAULT_REPLAY_CACHE_SIZE):
        if max_entries < 1:
            msg = "max_entries must be at least 1"
            raise ValueError(msg)
        self.path = path
        self.max_entries = max_entries
        self._expiry: dict[str, datetime] = {}
        self.floor: datetime | None = None
        #: Set when a persisted cache was lost: commands issued before it are refused.
        self.not_issued_before: datetime | None = None
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._expiry

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {key: datetime.fromisoformat(value) for key, value in data["ids"].items()}
            floor = datetime.fromisoformat(data["floor"]) if data.get("floor") else None
            cutoff = data.get("not_issued_before")
            not_issued_before = datetime.fromisoformat(cutoff) if cutoff else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged cache must not silently reopen the replay window: refuse
            # every command issued before now, then start afresh.
            logger.warning("replay cache %s unreadable (%s); refusing older commands", path, exc)
            self.not_issued_before = utcnow()
            return
        self._expiry = entries
        self.floor = floor
        self.not_issued_before = not_issued_before
        self.prune(utcnow())

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "floor": isoformat_z(self.floor) if self.floor else None,
            "not_issued_before": (
                isoformat_z(self.not_issued_before) if self.not_issued_before else None
            ),
            "ids": {key: isoformat_z(value) for key, value in self._expiry.items()},
        }
        write_file_atomic(self.path, json.dumps(data).encode(), mode=0o600)

    def prune(self, now: datetime) -> None:
        """Forget the ids whose commands have expired by ``now``."""
        self._expiry = {key: value for key, value in self._expiry.items() if value > now}

    def check_and_add(
        self,
        command_id: str,
        expires_at: datetime,
        now: datetime,
        keep_after_expiry: timedelta = DEFAULT_CLOCK_SKEW,
        issued_at: datetime | None = None,
    ) -> None:
        """Record a command id, or refuse it as a replay.

        Args:
            command_id: The command's id.
            expires_at: When it expires; it is remembered until then plus ``keep_after_expiry``.
            now: The current time.
            keep_after_expiry: The clock-skew allowance verification grants after expiry.
            issued_at: When it was issued (checked against :attr:`not_issued_before`).

        Raises:
            ReplayedCommand: when the id was seen before, or expires no later
                than an id the bounded cache had to forget.
        """
        keep_until = expires_at + keep_after_expiry
        with self._lock:
            if command_id in self._expiry and self._expiry[command_id] > now:
                msg = f"command {command_id} was already received"
                raise ReplayedCommand(msg, command_id=command_id)
            if self.floor is not None and keep_until <= self.floor:
                msg = f"command {command_id} is older than the replay cache remembers"
                raise ReplayedCommand(msg, command_id=command_id)
            if (
                self.not_issued_before is not None
                and issued_at is not None
                and issued_at < self.not_issued_before
            ):
                msg = f"command {command_id} predates a lost replay cache"
                raise ReplayedCommand(msg, command_id=command_id)
            if len(self._expiry) >= self.max_entries:
                self.prune(now)
            while len(self._expiry) >= self.max_entries:
                oldest = min(self._expiry, key=self._expiry.__getitem__)
                forgotten = self._expiry.pop(oldest)
                self.floor = forgotten if self.floor is None else max(self.floor, forgotten)
            self._expiry[command_id] = keep_until
            self._save()
