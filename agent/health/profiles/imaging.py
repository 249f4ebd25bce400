"""The imaging console's real profile: DICOM C-ECHO to its peers, its own services, its cache.

Each sample sends a C-ECHO (the DICOM Verification service) to every
configured peer (PACS, worklist, archive) with pynetdicom, as ``echoscu``
would: associate, echo, release (:mod:`agent.health.profiles.dicom_echo`).
pynetdicom is blocking and thread-based, so each echo runs in a worker thread
with one time bound over the whole exchange; pynetdicom is imported on the
first echo only, so an agent without this profile never loads it (the idle
agent's memory budget).

A failed echo says why, because the field engineer's next step depends on
it: ``refused`` (nothing listens: the PACS service is down), ``timeout`` (a
firewall drops the packets, or the peer hangs), ``unreachable`` (no route, or
the name does not resolve), ``rejected`` (the peer answered and refused the
association: almost always the calling AE title is not configured on the
PACS), ``aborted`` (the peer aborted the association) or ``failed`` (the
echo itself returned an error status).

Metrics: ``imaging.dicom_peer_up:<peer>`` (1/0), ``imaging.dicom_echo_ms:<peer>``
(after a good echo), ``imaging.service_up:<service>`` (1/0),
``imaging.cache_disk_percent``.
Faults: ``DICOM-ECHO-FAIL-<PEER>`` (error), ``SVC-DOWN-<SERVICE>`` (error),
``CACHE-HIGH`` (warning, from 85 %), ``CACHE-FULL`` (error, from 95 %),
``CACHE-UNAVAILABLE`` (error: the cache path cannot be read).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from agent.health.collectors.base import Reading
from agent.health.profiles.base import ProfileOptions
from agent.health.profiles.dicom_echo import EchoFailure, EchoResult, EchoWorker
from shared.errors import ConfigError
from shared.wire import FaultReport

logger = logging.getLogger(__name__)

DEFAULT_CALLING_AE_TITLE: Final = "FIELDLINK"
DEFAULT_ECHO_TIMEOUT_S: Final = 4.0
CACHE_HIGH_PERCENT: Final = 85.0
CACHE_FULL_PERCENT: Final = 95.0
#: A peer's or a service's name: it becomes part of a metric name and a fault code.
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: A process name as the kernel shows it (``comm``, 15 characters) or a longer executable name.
_PROCESS_RE: Final = re.compile(r"^[A-Za-z0-9._+-][A-Za-z0-9._+ :-]{0,63}$")


@dataclass(frozen=True, slots=True)
class DicomPeer:
    """A DICOM node the console talks to (``[[agent.dicom_peers]]``)."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """One of the console's own services: a running process, or a listening TCP port."""

    name: str
    process: str | None = None
    port: int | None = None


def _check_ae_title(value: Any, key: str) -> str:
    # PS3.5 AE: 1-16 characters of the default repertoire, no backslash, not all spaces.
    if not isinstance(value, str):
        msg = f"{key}: must be a string"
        raise ConfigError(msg)
    title = value.strip()
    if not title or len(title) > 16 or "\\" in title or not title.isprintable():
        msg = f"{key}: must be 1-16 printable characters without a backslash (a DICOM AE title)"
        raise ConfigError(msg)
    if not title.isascii():
        msg = f"{key}: must be ASCII (a DICOM AE title)"
        raise ConfigError(msg)
    return title


def _check_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        msg = f"{key}: must be 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        raise ConfigError(msg)
    return value


def _check_port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        msg = f"{key}: must be a TCP port (1-65535)"
        raise ConfigError(msg)
    return value


def _check_keys(entry: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    for key in entry:
        if key not in known:
            msg = f"{where} {key}: unknown key (known: {', '.join(known)})"
            raise ConfigError(msg)


def _tables(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        msg = f"{where}: must be an array of tables"
        raise ConfigError(msg)
    return list(value)


@dataclass(frozen=True, slots=True)
class ImagingTargets:
    """What the imaging profile watches, checked from the agent's configuration.

    Attributes:
        peers: ``[[agent.dicom_peers]]``: ``name``, ``ae_title``, ``host``, ``port``.
        calling_ae_title: ``[agent.dicom] calling_ae_title``: this console's AE title.
        echo_timeout_s: ``[agent.dicom] timeout_s``: bound of one whole echo.
        services: ``[[agent.services_check]]``: ``name`` and ``process`` or ``port``.
        cache_path: ``image_cache_path``: a path on the image cache's file system.
    """

    peers: tuple[DicomPeer, ...] = ()
    calling_ae_title: str = DEFAULT_CALLING_AE_TITLE
    echo_timeout_s: float = DEFAULT_ECHO_TIMEOUT_S
    services: tuple[ServiceCheck, ...] = ()
    cache_path: Path | None = None

    @classmethod
    def parse(cls, targets: Mapping[str, Any]) -> ImagingTargets:
        """Check the profile's tables (``dicom_peers``, ``dicom``, ``services_check``...).

        Raises:
            ConfigError: naming the first bad key.
        """
        peers: list[DicomPeer] = []
        for i, entry in enumerate(_tables(targets.get("dicom_peers"), "[[agent.dicom_peers]]")):
            where = f"[[agent.dicom_peers]] #{i + 1}"
            _check_keys(entry, ("name", "ae_title", "host", "port"), where)
            name = _check_name(entry.get("name"), f"{where} name")
            host = entry.get("host")
            if not isinstance(host, str) or not host.strip() or len(host) > 253:
                msg = f"{where} host: required, a host name or an IP address"
                raise ConfigError(msg)
            peers.append(
                DicomPeer(
                    name=name,
                    ae_title=_check_ae_title(entry.get("ae_title"), f"{where} ae_title"),
                    host=host.strip(),
                    port=_check_port(entry.get("port", 104), f"{where} port"),
                )
            )
        if len({p.name for p in peers}) != len(peers):
            msg = "[[agent.dicom_peers]] name: each peer needs its own name"
            raise ConfigError(msg)
        dicom = targets.get("dicom") or {}
        if not isinstance(dicom, Mapping):
            msg = "[agent.dicom]: must be a table"
            raise ConfigError(msg)
        _check_keys(dicom, ("calling_ae_title", "timeout_s"), "[agent.dicom]")
        calling = _check_ae_title(
            dicom.get("calling_ae_title", DEFAULT_CALLING_AE_TITLE),
            "[agent.dicom] calling_ae_title",
        )
        timeout = dicom.get("timeout_s", DEFAULT_ECHO_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            msg = "[agent.dicom] timeout_s: must be a number greater than 0"
            raise ConfigError(msg)
        services: list[ServiceCheck] = []
        where_svc = "[[agent.services_check]]"
        for i, entry in enumerate(_tables(targets.get("services_check"), where_svc)):
            where = f"{where_svc} #{i + 1}"
            _check_keys(entry, ("name", "process", "port"), where)
            name = _check_name(entry.get("name"), f"{where} name")
            process, port = entry.get("process"), entry.get("port")
            if (process is None) == (port is None):
                msg = f"{where}: set either process or port"
                raise ConfigError(msg)
            if process is not None and (
                not isinstance(process, str) or not _PROCESS_RE.match(process)
            ):
                msg = f"{where} process: must be a process name (as ps -e shows it)"
                raise ConfigError(msg)
            services.append(
                ServiceCheck(
                    name=name,
                    process=process,
                    port=None if port is None else _check_port(port, f"{where} port"),
                )
            )
        if len({s.name for s in services}) != len(services):
            msg = f"{where_svc} name: each service needs its own name"
            raise ConfigError(msg)
        cache = targets.get("image_cache_path")
        return cls(
            peers=tuple(peers),
            calling_ae_title=calling,
            echo_timeout_s=float(timeout),
            services=tuple(services),
            cache_path=None if cache is None else Path(cache),
        )


def _services_up(services: tuple[ServiceCheck, ...]) -> dict[str, bool]:
    """Which services run: a process of that name, or a socket listening on that port."""
    import psutil

    up: dict[str, bool] = {}
    names: set[str] = set()
    if any(s.process for s in services):
        for proc in psutil.process_iter(["name", "exe"]):
            names.add(proc.info["name"] or "")
            if proc.info["exe"]:
                names.add(os.path.basename(proc.info["exe"]))
    ports: set[int] = set()
    if any(s.port for s in services):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                ports.add(conn.laddr.port)
    for service in services:
        up[service.name] = (
            service.process in names if service.process is not None else service.port in ports
        )
    return up


def _cache_percent(path: Path) -> float:
    import psutil

    return float(psutil.disk_usage(str(path)).percent)


def _fault(code: str, severity: Literal["warning", "error"], message: str) -> FaultReport:
    return {"code": code, "severity": severity, "message": message[:1024]}


class ImagingProfile:
    """The real imaging console: DICOM peers, the console's services, its image cache."""

    name = "imaging"

    def __init__(self, options: ProfileOptions) -> None:
        self.targets = ImagingTargets.parse(options.targets)
        self._workers = [EchoWorker(peer) for peer in self.targets.peers]
        self._last_failure: dict[str, EchoFailure | None] = {}

    async def collect(self) -> Reading:
        """Echo every peer at once, then check the services and the cache."""
        targets = self.targets
        metrics: dict[str, float] = {}
        faults: list[FaultReport] = []
        results = await asyncio.gather(
            *(w.echo(targets.calling_ae_title, targets.echo_timeout_s) for w in self._workers)
        )
        for worker, result in zip(self._workers, results, strict=True):
            peer = worker.peer
            metrics[f"imaging.dicom_peer_up:{peer.name}"] = 0.0 if result.failure else 1.0
            if result.failure is None:
                metrics[f"imaging.dicom_echo_ms:{peer.name}"] = result.elapsed_ms
            else:
                faults.append(
                    _fault(
                        f"DICOM-ECHO-FAIL-{peer.name.upper()}",
                        "error",
                        f"DICOM C-ECHO to {peer.name} ({peer.ae_title}@{peer.host}:{peer.port}) "
                        f"failed [{result.failure}]: {result.detail}",
                    )
                )
            self._log_change(peer, result)
        if targets.services:
            up = await asyncio.to_thread(_services_up, targets.services)
            for service in targets.services:
                metrics[f"imaging.service_up:{service.name}"] = 1.0 if up[service.name] else 0.0
                if not up[service.name]:
                    what = (
                        f"no process named {service.process!r}"
                        if service.process is not None
                        else f"nothing listens on TCP port {service.port}"
                    )
                    faults.append(
                        _fault(
                            f"SVC-DOWN-{service.name.upper()}",
                            "error",
                            f"service {service.name} is not running: {what}",
                        )
                    )
        if targets.cache_path is not None:
            faults.extend(await self._check_cache(targets.cache_path, metrics))
        return Reading(metrics=metrics, faults=faults)

    async def _check_cache(self, path: Path, metrics: dict[str, float]) -> list[FaultReport]:
        try:
            percent = await asyncio.to_thread(_cache_percent, path)
        except OSError as exc:
            return [
                _fault(
                    "CACHE-UNAVAILABLE",
                    "error",
                    f"image cache {path} cannot be read: {exc.strerror or exc}",
                )
            ]
        metrics["imaging.cache_disk_percent"] = percent
        if percent >= CACHE_FULL_PERCENT:
            return [_fault("CACHE-FULL", "error", f"Image cache disk full ({percent:.0f}%)")]
        if percent >= CACHE_HIGH_PERCENT:
            return [_fault("CACHE-HIGH", "warning", f"Image cache disk {percent:.0f}% full")]
        return []

    def _log_change(self, peer: DicomPeer, result: EchoResult) -> None:
        # One line when a peer goes down or comes back, not one per sample.
        before = self._last_failure.get(peer.name, None)
        self._last_failure[peer.name] = result.failure
        if result.failure is not None and result.failure != before:
            logger.warning("DICOM peer %s: %s: %s", peer.name, result.failure, result.detail)
        elif result.failure is None and before is not None:
            logger.info("DICOM peer %s answers C-ECHO again", peer.name)
