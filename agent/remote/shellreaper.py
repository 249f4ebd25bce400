"""How the shell helper ends everything a session started: its process tree, and its cgroup.

Each connection's monitor (:class:`agent.remote.shellhelper.ShellHelper`) is a
child subreaper (:func:`set_child_subreaper`), so processes that leave the
session with ``setsid`` or a double fork stay below it and :func:`descendants`
finds them in ``/proc``; under systemd with ``Delegate=yes`` each session also
has a cgroup of its own (:class:`SessionCgroups`), ended whole. Standard library
only; root's helper uses it, the agent never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Final

from shared.errors import ConfigError

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER: Final = 36


class SessionCgroups:
    """One cgroup v2 per session, under the helper's own delegated cgroup.

    With ``Delegate=yes`` systemd hands the helper its unit's cgroup: the helper
    moves itself into ``helper/`` and each session into ``session-N/``, which it
    ends whole with ``cgroup.kill`` (no process leaves a cgroup it cannot write).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def delegated(cls) -> SessionCgroups:
        """The helper's cgroup, with the helper moved into its ``helper`` leaf.

        Raises:
            ConfigError: no cgroup v2 hierarchy, or it cannot be written.
        """
        mount = _cgroup2_mount()
        own = next(
            (
                line[3:].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.startswith("0::")
            ),
            None,
        )
        if mount is None or own is None:
            msg = "--session-cgroups needs a cgroup v2 hierarchy (systemd's unified mode)"
            raise ConfigError(msg)
        root = mount / own.lstrip("/")
        if root.name == "helper":  # restarted inside the leaf it made before
            root = root.parent
        try:
            (root / "helper").mkdir(exist_ok=True)
            (root / "helper" / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            msg = f"--session-cgroups: cannot manage {root} ({exc.strerror}): set Delegate=yes"
            raise ConfigError(msg) from exc
        return cls(root)

    def create(self, name: str) -> Path:
        """A new, empty session cgroup."""
        path = self.root / name
        path.mkdir()
        return path

    @staticmethod
    def end(path: Path) -> None:
        """SIGKILL everything left in ``path`` and remove it."""
        kill = path / "cgroup.kill"
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
            if not pids:
                break
            if kill.exists():
                kill.write_text("1")
            else:  # kernels before 5.14
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            reap_children()
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            path.rmdir()


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if rest.split(" ", 1)[0] == "cgroup2":
            return Path(fields.split()[4])
    return None


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (zombies excluded: reaping ends them)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def reap_children(*_args: Any) -> None:
    """Reap every child that has exited (also a ``SIGCHLD`` handler)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def set_child_subreaper() -> None:
    """Adopt the orphans of this process's descendants (``PR_SET_CHILD_SUBREAPER``)."""
    import ctypes  # only in the helper's monitor, never in the agent

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("cannot become a child subreaper: escaped processes may survive")
