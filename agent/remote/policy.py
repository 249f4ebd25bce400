"""The site policy of remote sessions: what a session may reach and how long it may last.

A site owner decides, per device, which local services a remote session may
forward to (``[agent.services]``: ``web = "127.0.0.1:80"``), whether a session
needs local approval (``consent``), and the limits every session lives under
(maximum duration, idle timeout). :class:`SitePolicy` holds those decisions;
the agent's SSH server (:mod:`agent.remote.sshd`) enforces them.

Forwarding rule (direct-tcpip): an SSH client names a service either by its
allowlisted name with port 0 or with the service's own port (``-L 8080:web:0``,
``-L 8080:web:80``), or by the exact target of an allowlisted service
(``-L 8080:127.0.0.1:80``). Nothing else is forwarded: no other host, no
other port, no name resolution on the device.

This module imports nothing heavy: the idle agent may load it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from shared.errors import ConfigError

logger = logging.getLogger(__name__)

ConsentMode = Literal["none", "notify", "required", "local"]
#: The consent modes under which a session waits for the site's decision.
ASKING_CONSENT: Final[frozenset[str]] = frozenset({"required", "local"})

#: Defaults of ``[agent.policy]``.
DEFAULT_APPROVAL_TIMEOUT_S: Final = 60.0
DEFAULT_MAX_DURATION_S: Final = 4 * 3600.0
DEFAULT_IDLE_TIMEOUT_S: Final = 15 * 60.0
DEFAULT_MAX_SESSIONS: Final = 4
#: A device watched through this agent (a site gateway's ``[[agent.devices]]``): the
#: services a session to it may forward to, on the device's own address.
WATCHED_SERVICE_PORTS: Final[Mapping[str, int]] = {"web": 80, "https": 443}
#: The maintenance account of remote shells started by the privileged helper.
DEFAULT_SHELL_USER: Final = "fieldlink-maint"
_USER_NAME: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """One allowlisted local service a session may forward to.

    Attributes:
        name: The name operators use (``web``, ``vnc``).
        host: The address on the device (usually a loopback address).
        port: The TCP port on the device.
    """

    name: str
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, target: str) -> ServiceTarget:
        """Parse ``"host:port"`` (``"[::1]:80"`` for IPv6) into a target.

        Args:
            name: The service name.
            target: ``host:port``.

        Returns:
            The target.

        Raises:
            ConfigError: The name or the target is malformed.
        """
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            msg = f"service name {name!r} must be letters, digits, '-' or '_'"
            raise ConfigError(msg)
        host, sep, port_text = target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            msg = f"service {name!r}: target {target!r} is not host:port"
            raise ConfigError(msg)
        return cls(name=name, host=host, port=int(port_text))


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """What remote sessions may do on this device, and for how long.

    Attributes:
        services: Allowlisted local services by name.
        allowed_services: Names of ``services`` a session may use; ``None``
            means all of them. A session may narrow this further.
        consent: ``none`` (no local step), ``notify`` (the site is told),
            ``required`` (the site must approve, on the device or on the web:
            the console, the API or a one-time link, as a signed ``session.decide``)
            or ``local`` (the site must approve on the device itself: a web
            decision is refused). The session waits for it before dialing.
        approval_timeout_s: How long a ``required`` approval may take.
        max_duration_s: The longest a tunnel may live.
        idle_timeout_s: The longest a tunnel may carry no byte either way.
        sftp_folders: Folders SFTP (and scp) may reach, by name. With one
            folder, ``/`` is that folder; with several, ``/<name>/...``.
            Empty: SFTP is refused.
        login_shell: The program of shell and exec channels (``[agent.policy]
            shell``); ``None`` means the login shell of the agent's user.
        max_sessions: Sessions the device holds at once (awaiting consent,
            connecting or active); a ``session.open`` beyond it is refused (``busy``).
        shell_helper: The privileged helper's socket (``[agent.policy]
            shell_helper``, see :mod:`agent.remote.shellhelper`): shell and exec
            channels then run as ``shell_user``, outside the agent's sandbox.
            ``None``: they run as the agent's own user (demo, simulated devices).
        shell_user: The maintenance account the helper starts shells as (the
            helper reads it from its own root-owned copy of the configuration).
        watched_services: Of :data:`WATCHED_SERVICE_PORTS`, those a session to a
            device this agent watches may use (``[agent.policy] watched_services``;
            none unless the site lists them).
        allow_shell: Shell and exec channels are served (``False`` in a session to a
            watched device: it reaches that device's web page and nothing of this one).
    """

    services: Mapping[str, ServiceTarget] = field(default_factory=dict)
    allowed_services: frozenset[str] | None = None
    consent: ConsentMode = "none"
    approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    sftp_folders: Mapping[str, Path] = field(default_factory=dict)
    login_shell: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    shell_helper: Path | None = None
    shell_user: str = DEFAULT_SHELL_USER
    watched_services: frozenset[str] = frozenset()
    allow_shell: bool = True

    @classmethod
    def from_config(
        cls,
        services: Mapping[str, str] | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> SitePolicy:
        """Build a policy from the ``[agent.services]`` and ``[agent.policy]`` tables.

        Args:
            services: Service name to ``"host:port"``.
            policy: ``services`` (list of allowed names), ``consent``,
                ``approval_timeout_s``, ``max_duration_s``, ``idle_timeout_s``,
                ``sftp_folders`` (name to path), ``shell``, ``max_sessions``,
                ``shell_helper`` (a socket path), ``shell_user`` (an account name).

        Returns:
            The policy.

        Raises:
            ConfigError: A value is malformed or names an unknown service.
        """
        targets = {name: ServiceTarget.parse(name, str(t)) for name, t in (services or {}).items()}
        table = dict(policy or {})
        unknown_keys = set(table) - {
            "services",
            "consent",
            "approval_timeout_s",
            "max_duration_s",
            "idle_timeout_s",
            "sftp_folders",
            "shell",
            "max_sessions",
            "shell_helper",
            "shell_user",
            "watched_services",
        }
        if unknown_keys:
            msg = f"[agent.policy]: unknown keys {sorted(unknown_keys)}"
            raise ConfigError(msg)
        allowed: frozenset[str] | None = None
        if "services" in table:
            allowed = frozenset(str(name) for name in table["services"])
            missing = allowed - set(targets)
            if missing:
                msg = f"[agent.policy] services names unknown services {sorted(missing)}"
                raise ConfigError(msg)
        consent = table.get("consent", "none")
        if consent not in get_args(ConsentMode):
            msg = f"[agent.policy] consent must be none, notify, required or local, not {consent!r}"
            raise ConfigError(msg)
        limits: dict[str, float] = {}
        for key, default in (
            ("approval_timeout_s", DEFAULT_APPROVAL_TIMEOUT_S),
            ("max_duration_s", DEFAULT_MAX_DURATION_S),
            ("idle_timeout_s", DEFAULT_IDLE_TIMEOUT_S),
        ):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                msg = f"[agent.policy] {key} must be a positive number of seconds"
                raise ConfigError(msg)
            limits[key] = float(value)
        folders = {
            str(name): Path(path) for name, path in dict(table.get("sftp_folders", {})).items()
        }
        for name, path in folders.items():
            if not path.is_absolute() or "/" in name or not name:
                msg = f"[agent.policy] sftp_folders.{name} must name an absolute path"
                raise ConfigError(msg)
        shell = table.get("shell")
        max_sessions = table.get("max_sessions", DEFAULT_MAX_SESSIONS)
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            msg = "[agent.policy] max_sessions must be a whole number of at least 1"
            raise ConfigError(msg)
        helper_raw = table.get("shell_helper") or None
        shell_helper = Path(str(helper_raw)) if helper_raw is not None else None
        if shell_helper is not None and not shell_helper.is_absolute():
            msg = "[agent.policy] shell_helper must be the absolute path of the helper's socket"
            raise ConfigError(msg)
        shell_user = table.get("shell_user", DEFAULT_SHELL_USER)
        if not isinstance(shell_user, str) or not _USER_NAME.fullmatch(shell_user):
            msg = f"[agent.policy] shell_user must be an account name, not {shell_user!r}"
            raise ConfigError(msg)
        watched = table.get("watched_services", [])
        if not isinstance(watched, list | tuple) or not set(watched) <= set(WATCHED_SERVICE_PORTS):
            msg = (
                "[agent.policy] watched_services must list some of "
                f"{', '.join(WATCHED_SERVICE_PORTS)}"
            )
            raise ConfigError(msg)
        return cls(
            watched_services=frozenset(str(name) for name in watched),
            shell_helper=shell_helper,
            shell_user=shell_user,
            services=targets,
            allowed_services=allowed,
            consent=consent,
            sftp_folders=folders,
            login_shell=str(shell) if shell else None,
            max_sessions=max_sessions,
            approval_timeout_s=limits["approval_timeout_s"],
            max_duration_s=limits["max_duration_s"],
            idle_timeout_s=limits["idle_timeout_s"],
        )

    def for_watched(self, host: str, ports: Mapping[str, int] | None = None) -> SitePolicy:
        """The policy of a session to a device this agent watches, at ``host``.

        It forwards to that device's web page only (``web`` and ``https`` on ``host``,
        at ``ports`` or :data:`WATCHED_SERVICE_PORTS`; of them the ``watched_services``
        the site allows): no shell, exec or SFTP, none of this agent's own services, no
        other host. Consent, limits and ``max_sessions`` are the site's.
        """
        chosen = {**WATCHED_SERVICE_PORTS, **(ports or {})}
        return dataclasses.replace(
            self,
            services={
                name: ServiceTarget(name=name, host=host, port=chosen[name])
                for name in WATCHED_SERVICE_PORTS
            },
            allowed_services=self.watched_services,
            sftp_folders={},
            login_shell=None,
            shell_helper=None,
            allow_shell=False,
        )

    def narrowed(self, services: frozenset[str] | None) -> SitePolicy:
        """This policy limited to the services one session asked for.

        Args:
            services: The services named in ``session.open``; ``None`` keeps all.

        Returns:
            A policy allowing only services both allow.
        """
        if services is None:
            return self
        current = (
            self.allowed_services if self.allowed_services is not None else frozenset(self.services)
        )
        return dataclasses.replace(self, allowed_services=current & services)

    def limited(
        self, max_duration_s: float | None = None, idle_timeout_s: float | None = None
    ) -> SitePolicy:
        """This policy under a session's own caps: each limit is the smaller of the two.

        Args:
            max_duration_s: The session's maximum duration (``None``: the site's).
            idle_timeout_s: The session's idle timeout (``None``: the site's).

        Returns:
            A policy whose limits are never longer than this one's.
        """
        return dataclasses.replace(
            self,
            max_duration_s=min(self.max_duration_s, max_duration_s or self.max_duration_s),
            idle_timeout_s=min(self.idle_timeout_s, idle_timeout_s or self.idle_timeout_s),
        )

    def is_allowed(self, name: str) -> bool:
        """Whether the service ``name`` exists and this policy allows it."""
        return name in self.services and (
            self.allowed_services is None or name in self.allowed_services
        )

    def resolve_forward(self, host: str, port: int) -> ServiceTarget | None:
        """The allowlisted target a direct-tcpip request names, or ``None``.

        Args:
            host: The host the SSH client asked for (a service name or a target host).
            port: The port it asked for (0 with a service name means its own port).

        Returns:
            The target to connect to, or ``None`` when the request is refused.
        """
        target = self.services.get(host)
        if target is not None:
            if port in (0, target.port) and self.is_allowed(target.name):
                return target
            return None
        for candidate in self.services.values():
            if (candidate.host, candidate.port) == (host, port) and self.is_allowed(candidate.name):
                return candidate
        return None
