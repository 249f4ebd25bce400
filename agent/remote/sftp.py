"""SFTP and scp for a remote session, confined to the site's folders (``policy.sftp_folders``).

:mod:`agent.remote.sshd` offers this subsystem only when the site policy names
folders; every path outside them is refused and reported as an ``sftp``
refusal. This module imports asyncssh: import it only when a session opens.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import asyncssh

from agent.remote.outcome import RefusalKind


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """SFTP (and scp) confined to the site's folders.

    With one folder, the client's ``/`` is that folder. With several, ``/``
    lists their names and ``/<name>/...`` is inside each. Every path is
    resolved (symlinks included) and refused unless it stays inside a folder.
    """

    def __init__(
        self,
        channel: asyncssh.SSHServerChannel[bytes],
        folders: Mapping[str, Path],
        refuse: Callable[[RefusalKind, str, str], None],
    ) -> None:
        super().__init__(channel)
        self._refuse = refuse
        self._folders = {
            name.encode(): os.path.realpath(path).encode() for name, path in folders.items()
        }
        self._index: bytes | None = None
        if len(self._folders) > 1:
            # A private directory of links stands in for the virtual "/".
            self._index = os.path.realpath(tempfile.mkdtemp(prefix="fieldlink-sftp-")).encode()
            for name, real in self._folders.items():
                os.symlink(real, os.path.join(self._index, name))

    def _real_roots(self) -> list[bytes]:
        return list(self._folders.values())

    def map_path(self, path: bytes) -> bytes:
        """Map a client path to a real path inside the folders, or refuse it."""
        virtual = os.path.normpath(os.path.join(b"/", path))
        if self._index is None:
            (root,) = self._real_roots()
            local = os.path.join(root, virtual.lstrip(b"/"))
        elif virtual == b"/":
            return self._index
        else:
            name, _, rest = virtual.lstrip(b"/").partition(b"/")
            root = self._folders.get(name, b"")
            if not root:
                self._deny(path)
            local = os.path.join(root, rest)
        real = os.path.realpath(local)
        if not any(real == root or real.startswith(root + b"/") for root in self._real_roots()):
            self._deny(path)
        return real

    def reverse_map_path(self, path: bytes) -> bytes:
        """Map a real path back to what the client sees."""
        if self._index is not None and path == self._index:
            return b"/"
        for name, root in self._folders.items():
            if path == root or path.startswith(root + b"/"):
                prefix = b"" if self._index is None else b"/" + name
                return (prefix + path[len(root) :]) or b"/"
        msg = "File not found"
        raise asyncssh.SFTPNoSuchFile(msg)

    def rmdir(self, path: bytes) -> None:
        """Remove a directory, never one of the folders themselves."""
        if self.map_path(path) in self._real_roots():
            self._deny(path)
        super().rmdir(path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """Rename inside the folders, never one of the folders themselves."""
        if self.map_path(oldpath) in self._real_roots():
            self._deny(oldpath)
        super().rename(oldpath, newpath)

    def exit(self) -> None:
        """Remove the private index directory, if any."""
        if self._index is not None:
            shutil.rmtree(self._index, ignore_errors=True)
        super().exit()

    def _deny(self, path: bytes) -> None:
        self._refuse("sftp", path.decode(errors="replace"), "outside the confined folders")
        msg = "outside the confined folders"
        raise asyncssh.SFTPPermissionDenied(msg)
