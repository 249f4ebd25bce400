"""The broker update, queued until the broker has it: CRL, ACL deny block, certificate, reload.

A revocation (or a CRL refresh, or a renewed broker certificate) changes files
under ``state_dir/pki``; the broker only acts on them once they are copied into
its folder and it reloaded (SIGHUP). That second half can fail (the broker is
down, restarting, or this process may not signal it), so it is not done "once,
or error" but recorded as a *generation* to reach:

- :func:`request_broker_update` bumps the wanted generation (noting the device
  for a revocation) and touches ``pki/broker-update.request``;
- :func:`apply_broker_update` copies the current CRL, ACL and broker
  certificate into every folder ``broker-config`` wrote, signals the broker,
  and records the generation it applied, or the error and when it last tried.

Who applies is ``reload_by`` in ``pki/broker-targets.json``: ``server`` (the
server and the CLI apply it themselves, retrying from :mod:`server.upkeep`),
or ``helper``: under the shipped systemd units the server may neither write
the broker's folder nor signal it, so ``fieldlink-broker-reload.path`` watches
the request file and starts ``fieldlink broker-reload`` with those rights; the
server only re-touches the request while the update is pending.

State lives in ``pki/broker-update.json`` (one CA, one broker fleet, one host:
the CA's folder is already the single place of truth for revocation).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning.broker import (
    FILE_NAMES,
    BrokerTargets,
    _place,
    _reload,
    render_acl,
)
from provisioning.pki import PkiPaths, read_revoked_device_ids
from shared.errors import FieldlinkError
from shared.ids import isoformat_z, utcnow
from shared.signing import write_file_atomic

logger = logging.getLogger(__name__)

ReloadBy = Literal["server", "helper"]
RELOAD_BY: Final[tuple[ReloadBy, ...]] = ("server", "helper")
BrokerState = Literal["applied", "pending", "unmanaged"]

STATE_FILE: Final = "broker-update.json"
#: Touched on every request; ``fieldlink-broker-reload.path`` watches it.
REQUEST_FILE: Final = "broker-update.request"
_LOCK_FILE: Final = ".broker-update.lock"
_APPLY_LOCK_FILE: Final = ".broker-apply.lock"
#: An error kept in the state is cut to this length (it is shown in the API and the console).
_MAX_ERROR: Final = 300
#: The largest CRL, certificate or key the reload helper copies (a CRL of ~20,000 entries).
_MAX_SOURCE: Final = 1024 * 1024


@dataclass
class BrokerUpdateState:
    """How far the broker is behind the CA's files."""

    generation: int = 0
    applied_generation: int = 0
    #: When the oldest change the broker does not have yet was made.
    pending_since: datetime | None = None
    applied_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    attempts: int = 0
    #: Revoked devices the broker does not refuse yet, with the generation that carries each.
    revocations: dict[str, int] = field(default_factory=dict)
    #: Whether ``broker-config`` wrote a broker folder for this CA at all.
    managed: bool = True
    reload_by: ReloadBy = "server"

    @property
    def pending(self) -> bool:
        """A change the broker does not have yet."""
        return self.managed and self.applied_generation < self.generation

    @property
    def state(self) -> BrokerState:
        """``applied``, ``pending``, or ``unmanaged`` (no broker folder: nobody to tell)."""
        if not self.managed:
            return "unmanaged"
        return "pending" if self.pending else "applied"

    def revocation_pending(self, device_id: str) -> bool:
        """Whether the broker still accepts this revoked device."""
        return self.managed and device_id in self.revocations

    def public(self) -> dict[str, Any]:
        """What the API, the CLI and the console show."""
        return {
            "state": self.state,
            "pending_since": isoformat_z(self.pending_since) if self.pending_since else None,
            "applied_at": isoformat_z(self.applied_at) if self.applied_at else None,
            "last_attempt_at": isoformat_z(self.last_attempt_at) if self.last_attempt_at else None,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "reload_by": self.reload_by,
        }

    def _to_json(self) -> bytes:
        def stamp(value: datetime | None) -> str | None:
            return isoformat_z(value) if value else None

        data = {
            "generation": self.generation,
            "applied_generation": self.applied_generation,
            "pending_since": stamp(self.pending_since),
            "applied_at": stamp(self.applied_at),
            "last_attempt_at": stamp(self.last_attempt_at),
            "last_error": self.last_error,
            "attempts": self.attempts,
            "revocations": self.revocations,
        }
        return json.dumps(data, indent=1).encode()


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _read(paths: PkiPaths) -> BrokerUpdateState:
    targets = BrokerTargets.load(paths.broker_targets)
    reload_by: ReloadBy = "helper" if targets.reload_by == "helper" else "server"
    state = BrokerUpdateState(managed=bool(targets.dirs), reload_by=reload_by)
    try:
        data = json.loads((paths.root / STATE_FILE).read_text())
    except FileNotFoundError:
        return state
    except (OSError, ValueError) as exc:
        # A damaged state file must not block revocation: start over, everything pending.
        logger.warning("%s is damaged (%s): the broker update starts over", STATE_FILE, exc)
        state.generation, state.pending_since = 1, utcnow()
        return state
    state.generation = int(data.get("generation", 0))
    state.applied_generation = int(data.get("applied_generation", 0))
    state.pending_since = _time(data.get("pending_since"))
    state.applied_at = _time(data.get("applied_at"))
    state.last_attempt_at = _time(data.get("last_attempt_at"))
    error = data.get("last_error")
    state.last_error = error if isinstance(error, str) else None
    state.attempts = int(data.get("attempts", 0))
    revocations = data.get("revocations", {})
    if isinstance(revocations, dict):
        state.revocations = {str(k): int(v) for k, v in revocations.items()}
    return state


def _own_like_folder(path: Path, fd: int | None = None) -> None:
    """Root (the reload helper, an admin's CLI) leaves files the server can still read.

    Never follows a symbolic link: the folder belongs to the (less privileged)
    server, which could otherwise point root's ``chown`` at any file.
    """
    if os.geteuid() != 0:
        return
    folder = path.parent.stat()
    if fd is not None:
        os.fchown(fd, folder.st_uid, folder.st_gid)
    else:
        os.chown(path, folder.st_uid, folder.st_gid, follow_symlinks=False)


def _save(paths: PkiPaths, state: BrokerUpdateState) -> None:
    path = paths.root / STATE_FILE
    write_file_atomic(path, state._to_json(), mode=0o600)
    _own_like_folder(path)


@contextlib.contextmanager
def _locked(paths: PkiPaths, name: str = _LOCK_FILE) -> Iterator[None]:
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = paths.root / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        _own_like_folder(path, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load_update_state(paths: PkiPaths) -> BrokerUpdateState:
    """The broker update's state as last recorded."""
    with _locked(paths):
        return _read(paths)


def touch_request(paths: PkiPaths, generation: int) -> None:
    """Write the wanted generation to the request file (the reload helper's trigger).

    Written in place, not renamed over: systemd's ``PathChanged=`` fires when a
    file opened for writing is closed.
    """
    path = paths.root / REQUEST_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        _own_like_folder(path, fd)
        os.write(fd, f"{generation}\n".encode())
    finally:
        os.close(fd)


def request_broker_update(
    paths: PkiPaths, *, device_id: str | None = None, now: datetime | None = None
) -> BrokerUpdateState:
    """Record that the broker needs the current CRL, ACL and certificate.

    Args:
        paths: The CA's files.
        device_id: The device just revoked, if that is the reason.
        now: The current time (tests).
    """
    now = now or utcnow()
    with _locked(paths):
        state = _read(paths)
        if not state.pending:
            state.pending_since = now
        state.generation += 1
        if device_id is not None:
            state.revocations[device_id] = state.generation
        _save(paths, state)
        touch_request(paths, state.generation)
    logger.info("broker update %d requested (%s)", state.generation, device_id or "files changed")
    return state


def _copy_into(directory: Path, files: dict[str, bytes]) -> None:
    for kind, data in files.items():
        path = directory / FILE_NAMES[kind]
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current == data:
            continue
        # Keep each file's owner (the broker's user when broker-config ran as root).
        uid = path.stat().st_uid if current is not None and os.geteuid() == 0 else None
        _place(path, data, 0o600 if kind == "key" else 0o644, uid)


def _read_source(path: Path) -> bytes:
    """A file of the server's PKI folder, as the reload helper may trust it.

    The helper runs with more rights than the server that owns that folder: a
    symbolic link (``crl.pem -> /etc/shadow``), a special file or a huge file
    must not make it copy something else into the broker's folder.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_SOURCE:
            msg = f"{path} is not a regular file of at most {_MAX_SOURCE} bytes"
            raise FieldlinkError(msg)
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(_MAX_SOURCE + 1)
    finally:
        os.close(fd)


def _broker_files(paths: PkiPaths) -> dict[str, bytes]:
    """What the broker's folder gets, each file checked to be what its name says."""
    try:
        key = _read_source(paths.broker_key)
        cert = _read_source(paths.broker_cert)
        crl = _read_source(paths.crl)
    except OSError as exc:
        msg = f"cannot read the PKI's broker files: {exc.strerror or exc}"
        raise FieldlinkError(msg) from exc
    try:
        serialization.load_pem_private_key(key, password=None)
        x509.load_pem_x509_certificate(cert)
        x509.load_pem_x509_crl(crl)
    except (ValueError, TypeError) as exc:
        msg = "the PKI's broker key, certificate or CRL is not valid PEM: not copied"
        raise FieldlinkError(msg) from exc
    # The key before the certificate: a broker reloading between the two writes
    # must never pair a new certificate with the old key.
    return {
        "key": key,
        "cert": cert,
        "crl": crl,
        "acl": render_acl(read_revoked_device_ids(paths)).encode(),
    }


def apply_broker_update(
    paths: PkiPaths,
    *,
    broker_pid: int | None = None,
    targets: BrokerTargets | None = None,
    now: datetime | None = None,
) -> BrokerUpdateState:
    """Copy the current files into every broker folder and make the broker reload them.

    Never raises for the broker's sake: a failure is recorded (``last_error``,
    ``attempts``) and the update stays pending for the next try.

    Args:
        paths: The CA's files.
        broker_pid: The broker's pid when the caller knows it (else pid file or command).
        targets: Where to copy and how to reload; default ``pki/broker-targets.json``.
            The reload helper passes its own (from its unit file), never trusting a
            file the less privileged server could have rewritten.
        now: The current time (tests).
    """
    now = now or utcnow()
    with _locked(paths, _APPLY_LOCK_FILE):
        with _locked(paths):
            target_generation = _read(paths).generation
        if targets is None:
            targets = BrokerTargets.load(paths.broker_targets)
        error: str | None = None
        try:
            files = _broker_files(paths)
            for folder in targets.dirs:
                try:
                    _copy_into(Path(folder), files)
                except OSError as exc:
                    msg = f"cannot write the broker's files in {folder}: {exc.strerror or exc}"
                    raise FieldlinkError(msg) from exc
            if targets.dirs and not _reload(targets, broker_pid):
                msg = "no broker pid file or reload command is configured (broker-config)"
                raise FieldlinkError(msg)
        except (FieldlinkError, OSError) as exc:
            error = str(exc)[:_MAX_ERROR]
        with _locked(paths):
            state = _read(paths)
            state.last_attempt_at = now
            if error is not None:
                state.last_error = error
                state.attempts += 1
                _save(paths, state)
                logger.warning(
                    "broker update %d not applied (attempt %d): %s",
                    state.generation,
                    state.attempts,
                    error,
                )
                return state
            state.applied_generation = max(state.applied_generation, target_generation)
            state.applied_at = now
            state.last_error = None
            state.attempts = 0
            state.revocations = {
                device: generation
                for device, generation in state.revocations.items()
                if generation > state.applied_generation
            }
            # A request that arrived while this one was applied is pending from now on.
            state.pending_since = now if state.pending else None
            _save(paths, state)
    if state.managed:
        logger.info("broker update %d applied", target_generation)
    return state


def update_broker(
    paths: PkiPaths,
    *,
    device_id: str | None = None,
    broker_pid: int | None = None,
    now: datetime | None = None,
) -> BrokerUpdateState:
    """Request a broker update and, when this side applies it (``reload_by = server``), try now.

    With ``reload_by = helper`` the request file's change starts the helper; the
    answer is then pending until it acknowledged (see :func:`wait_until_applied`).
    """
    state = request_broker_update(paths, device_id=device_id, now=now)
    if state.managed and state.reload_by == "server":
        state = apply_broker_update(paths, broker_pid=broker_pid, now=now)
    return state


def wait_until_applied(
    paths: PkiPaths, generation: int, timeout_s: float, poll_s: float = 0.2
) -> BrokerUpdateState:
    """Wait (blocking) for the reload helper to apply ``generation``; the last state read."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = load_update_state(paths)
        if state.applied_generation >= generation or not state.managed:
            return state
        if time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)
