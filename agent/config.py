"""The agent's settings: ``[agent]`` of ``agent.toml`` under ``FIELDLINK_<KEY>`` overrides.

The semantics are those of :mod:`server.config_file` (a TOML section, every key
overridable by an environment variable, one clear error line naming the bad
key, never its value), but without pydantic: importing pydantic-settings alone
costs the agent about 23 MB of resident memory, most of its 30 MB budget.

Delivery to the server, not only to the broker: a sample the broker
acknowledged stays in the outbox, marked sent, for ``resend_window_s`` seconds
(default 600) and at most ``resend_max_samples`` samples (default 2,000; 0
keeps none). When a server announces itself (it has just subscribed, after a
broker restart for instance), the agent re-publishes the samples it sent since
its own last connect that are still kept; the server stores each one once.
Sent samples never count against ``outbox_max_samples``.

Certificate renewal: with ``server_url``, ``ca_file``, ``cert_file`` and
``key_file`` set (as ``fieldlink agent enroll`` writes them), the agent checks
its certificate at start and every ``renew_check_interval_s`` seconds (default
21,600: 6 h). Once it expires within ``renew_before_days`` days (default 30;
devices get 397-day certificates), the agent renews it with a new key,
authenticated by the current one, and reconnects to the broker with the new
pair (see :mod:`agent.identity.renew`).

Remote sessions: ``[agent.services]`` (service name to ``"host:port"``) and
``[agent.policy]`` (consent, limits, SFTP folders, ``max_sessions``) make the
site policy (:class:`agent.remote.policy.SitePolicy`, checked when the file is
read). ``ssh_host_key_file`` is the SSH host key the server pinned at
enrollment (default: ``ssh_host_ed25519_key`` next to ``cert_file``, where
``fieldlink agent enroll`` writes both, else next to the configuration file);
``tunnel_proxy`` is ``env`` (the environment's ``https_proxy``), ``none`` or a
proxy URL. Both tables may also come from ``FIELDLINK_SERVICES`` and
``FIELDLINK_POLICY`` as JSON objects.

SNMP: ``[agent.snmp]`` (or ``FIELDLINK_SNMP`` as a JSON object) names the
printer the real ``mfp`` profile reads (see :mod:`agent.health.profiles.mfp`); its
community and keys are never logged nor echoed in an error. ``[[agent.devices]]``
(or ``FIELDLINK_DEVICES`` as a JSON array) lists the equipment a site gateway
watches over the network (:mod:`agent.config_devices`, :mod:`agent.health.gateway`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from agent.config_devices import check_not_self, parse_devices
from agent.config_values import (
    non_negative,
    one_of,
    optional,
    parse_bool,
    parse_broker_url,
    parse_device_id,
    parse_float,
    parse_int,
    parse_path,
    parse_proxy,
    parse_snmp,
    parse_str,
    parse_str_list,
    parse_table,
    parse_table_list,
    positive,
)
from agent.remote.policy import SitePolicy
from shared.broker_url import BrokerAddress
from shared.errors import ConfigError
from shared.tomlfile import read_toml_section
from shared.tomlfile import resolve_config_path as resolve_file

ENV_PREFIX: Final = "FIELDLINK_"
DEFAULT_CONFIG_PATH: Final = Path("/etc/fieldlink/agent.toml")
SECTION: Final = "agent"
PROFILES: Final = ("none", "mfp", "imaging", "server")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: The host key file ``fieldlink agent enroll`` writes next to the certificates.
SSH_HOST_KEY_FILENAME: Final = "ssh_host_ed25519_key"
DEFAULT_CONFIG_DIR: Final = DEFAULT_CONFIG_PATH.parent


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything the agent daemon reads from its configuration.

    Attributes:
        device_id: This device's id; also its certificate CN and broker username.
        broker_url: ``mqtt://host:port``, or ``mqtts://host:port`` for TLS.
        interval_s: Seconds between health samples.
        state_dir: Where the outbox (``outbox.sqlite3``) lives.
        profile: Device profile: ``none``, ``mfp``, ``imaging`` or ``server``.
        simulate: Run the profile on simulated values (demos, tests, load tests).
        seed: Seed of the simulated profile's random numbers (repeatable runs).
        keepalive_s: MQTT keepalive; the broker declares the agent gone after 1.5 times it.
        outbox_max_samples: Samples the outbox holds; the oldest are dropped past it.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        ca_file: CA bundle that signed the broker's certificate (TLS).
        cert_file: This device's client certificate (mutual TLS).
        key_file: This device's private key (mutual TLS).
        reconnect_min_s: Shortest wait before reconnecting to the broker.
        reconnect_max_s: Longest wait before reconnecting (the backoff's cap).
        collector_timeout_s: Time bound of one collector call.
        inflight_window: Samples published at once while draining the outbox.
        resend_window_s: Seconds a sample the broker acknowledged is kept for a resend.
        resend_max_samples: Acknowledged samples kept for a resend, at most (0: none).
        server_url: The center's HTTPS URL (enrollment, remote sessions).
        command_key_file: The server's pinned command-signing public key.
        renew_before_days: Renew the certificate once it expires within this many days.
        renew_check_interval_s: Seconds between two checks of the certificate's expiry.
        services: ``[agent.services]``: local services sessions may forward to.
        policy: ``[agent.policy]``: consent, limits and SFTP folders of sessions.
        ssh_host_key_file: The host key of the agent's SSH server (pinned by the server).
        tunnel_proxy: ``env`` (the environment's ``https_proxy``), ``none``, or a proxy URL.
        session_process: Serve each remote session's SSH stack in a process of its own
            that goes with the session, so the agent gives that memory back (the default;
            ``false`` serves sessions in the agent's process: a cold first session is
            faster, but the agent keeps the stack until it restarts).
        dicom_peers: ``[[agent.dicom_peers]]``: the imaging profile's DICOM peers.
        dicom: ``[agent.dicom]``: ``calling_ae_title`` and ``timeout_s`` of the C-ECHOs.
        services_check: ``[[agent.services_check]]``: the imaging console's own services.
        image_cache_path: A path on the imaging console's image-cache file system.
        systemd_units: The server profile's systemd units.
        smart_disks: The server profile's disks (empty: those ``smartctl --scan`` finds).
        snmp: ``[agent.snmp]``: the printer the real ``mfp`` profile reads over SNMP.
        devices: ``[[agent.devices]]``: the equipment this agent watches over the
            network as a site gateway (:mod:`agent.config_devices`).
    """

    device_id: str
    broker_url: str = "mqtt://127.0.0.1:1883"
    interval_s: float = 30.0
    state_dir: Path = Path("/var/lib/fieldlink-agent")
    profile: str = "none"
    simulate: bool = False
    seed: int | None = None
    keepalive_s: int = 30
    outbox_max_samples: int = 10_000
    log_level: str = "info"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    collector_timeout_s: float = 5.0
    inflight_window: int = 20
    resend_window_s: float = 600.0
    resend_max_samples: int = 2_000
    server_url: str | None = None
    command_key_file: Path | None = None
    renew_before_days: float = 30.0
    renew_check_interval_s: float = 21_600.0
    services: Mapping[str, str] = field(default_factory=dict, hash=False)
    policy: Mapping[str, Any] = field(default_factory=dict, hash=False)
    ssh_host_key_file: Path | None = None
    tunnel_proxy: str = "env"
    session_process: bool = True
    dicom_peers: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    dicom: Mapping[str, Any] = field(default_factory=dict, hash=False)
    services_check: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    image_cache_path: Path | None = None
    systemd_units: tuple[str, ...] = ()
    smart_disks: tuple[str, ...] = ()
    snmp: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)
    devices: tuple[Mapping[str, Any], ...] = field(default=(), hash=False, repr=False)
    broker: BrokerAddress = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "broker", BrokerAddress.parse(self.broker_url))

    @property
    def site_policy(self) -> SitePolicy:
        """The site policy of remote sessions, from ``services`` and ``policy``.

        Raises:
            ConfigError: when the tables are malformed (checked when loaded).
        """
        return SitePolicy.from_config(self.services, self.policy)

    @property
    def profile_targets(self) -> dict[str, Any]:
        """The real profile's settings, as :class:`~agent.health.profiles.ProfileOptions` wants."""
        if self.profile == "mfp":
            return dict(self.snmp)  # the printer's SNMP target (``[agent.snmp]``)
        return {
            "dicom_peers": list(self.dicom_peers),
            "dicom": dict(self.dicom),
            "services_check": list(self.services_check),
            "image_cache_path": self.image_cache_path,
            "systemd_units": list(self.systemd_units),
            "smart_disks": list(self.smart_disks),
        }

    @property
    def proxy(self) -> str | Literal[True] | None:
        """``tunnel_proxy`` as :func:`agent.remote.tunnel.dial_tunnel` takes it."""
        if self.tunnel_proxy == "env":
            return True
        if self.tunnel_proxy == "none":
            return None
        return self.tunnel_proxy


#: How each key is read from TOML values and from environment strings.
_PARSERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "device_id": parse_device_id,
    "broker_url": parse_broker_url,
    "interval_s": positive(parse_float),
    "state_dir": parse_path,
    "profile": one_of(PROFILES),
    "simulate": parse_bool,
    "seed": optional(parse_int),
    "keepalive_s": positive(parse_int),
    "outbox_max_samples": positive(parse_int),
    "log_level": one_of(LOG_LEVELS),
    "ca_file": optional(parse_path),
    "cert_file": optional(parse_path),
    "key_file": optional(parse_path),
    "reconnect_min_s": positive(parse_float),
    "reconnect_max_s": positive(parse_float),
    "collector_timeout_s": positive(parse_float),
    "inflight_window": positive(parse_int),
    "resend_window_s": positive(parse_float),
    "resend_max_samples": non_negative(parse_int),
    "server_url": optional(parse_str),
    "command_key_file": optional(parse_path),
    "renew_before_days": positive(parse_float),
    "renew_check_interval_s": positive(parse_float),
    "services": parse_table,
    "policy": parse_table,
    "ssh_host_key_file": optional(parse_path),
    "tunnel_proxy": parse_proxy,
    "session_process": parse_bool,
    "dicom_peers": parse_table_list,
    "dicom": parse_table,
    "services_check": parse_table_list,
    "image_cache_path": optional(parse_path),
    "systemd_units": parse_str_list,
    "smart_disks": parse_str_list,
    "snmp": parse_snmp,
    "devices": parse_devices,
}
KEYS: Final = tuple(_PARSERS)


def resolve_config_path(path: Path | None) -> Path | None:
    """The config file to read: ``path``, else ``FIELDLINK_CONFIG``, else the default if present."""
    return resolve_file(path, DEFAULT_CONFIG_PATH)


def load_agent_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AgentSettings:
    """Build the agent's settings from ``[agent]`` of ``path``, the environment and ``overrides``.

    Precedence, highest first: ``overrides`` (the caller's own), ``FIELDLINK_<KEY>``
    variables, the file, the defaults. Unknown keys in the file are an error;
    unrelated ``FIELDLINK_*`` variables (the server's) are ignored.

    Args:
        path: The TOML file, or ``None`` for environment and defaults only.
        environ: The environment to read (``os.environ`` by default).
        **overrides: Values that win over everything else.

    Raises:
        ConfigError: naming the first bad key, without echoing its value.
    """
    env = os.environ if environ is None else environ
    where = f"{path}: " if path is not None else ""
    values: dict[str, Any] = read_toml_section(path, SECTION) if path is not None else {}
    for key in values:
        if key not in _PARSERS:
            msg = f"{where}[{SECTION}] {key}: unknown key (known: {', '.join(KEYS)})"
            raise ConfigError(msg)
    sources = dict.fromkeys(values, "file")
    for key in KEYS:
        if (raw := env.get(ENV_PREFIX + key.upper())) is not None:
            values[key] = raw
            sources[key] = "env"
    for key, value in overrides.items():
        if key not in _PARSERS:
            msg = f"unknown agent setting {key!r}"
            raise ConfigError(msg)
        values[key] = value
        sources[key] = "override"
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        try:
            parsed[key] = _PARSERS[key](raw)
        except ValueError as exc:
            origin = f"{ENV_PREFIX}{key.upper()}" if sources[key] == "env" else f"[{SECTION}] {key}"
            msg = f"{where if sources[key] == 'file' else ''}{origin}: {exc}"
            raise ConfigError(msg) from None
    if "device_id" not in parsed:
        msg = f"{where}[{SECTION}] device_id: required (or set {ENV_PREFIX}DEVICE_ID)"
        raise ConfigError(msg)
    if parsed.get("ssh_host_key_file") is None:
        parsed["ssh_host_key_file"] = default_host_key_file(parsed.get("cert_file"), path)
    settings = AgentSettings(**parsed)
    _check_consistency(settings, where)
    return settings


def default_host_key_file(cert_file: Path | None, config_path: Path | None) -> Path:
    """Where ``fieldlink agent enroll`` put the SSH host key: next to the certificate.

    Args:
        cert_file: The device certificate (``None`` when not enrolled).
        config_path: The configuration file read (``None``: environment only).

    Returns:
        ``ssh_host_ed25519_key`` beside ``cert_file``, else beside the
        configuration file, else in ``/etc/fieldlink``.
    """
    if cert_file is not None:
        return cert_file.parent / SSH_HOST_KEY_FILENAME
    if config_path is not None:
        return config_path.parent / SSH_HOST_KEY_FILENAME
    return DEFAULT_CONFIG_DIR / SSH_HOST_KEY_FILENAME


def _check_consistency(settings: AgentSettings, where: str) -> None:
    try:
        settings.site_policy  # noqa: B018 - checked now, used when a session opens
    except ConfigError as exc:
        msg = f"{where}{exc}"
        raise ConfigError(msg) from None
    if (settings.cert_file is None) != (settings.key_file is None):
        msg = f"{where}[{SECTION}] cert_file and key_file: set both or neither"
        raise ConfigError(msg)
    if settings.reconnect_max_s < settings.reconnect_min_s:
        msg = f"{where}[{SECTION}] reconnect_max_s: must not be less than reconnect_min_s"
        raise ConfigError(msg)
    try:
        check_not_self(settings.devices, settings.device_id)
    except ConfigError as exc:
        msg = f"{where}[[{SECTION}.devices]] {exc}"
        raise ConfigError(msg) from None
    if not settings.simulate:
        _check_profile_targets(settings, where)


def _check_profile_targets(settings: AgentSettings, where: str) -> None:
    # The real profiles' tables are checked now, not at the first sample.
    if settings.profile == "imaging":
        from agent.health.profiles.imaging import ImagingTargets

        try:
            targets = ImagingTargets.parse(settings.profile_targets)
        except ConfigError as exc:
            msg = f"{where}{exc}"
            raise ConfigError(msg) from None
        if targets.echo_timeout_s >= settings.collector_timeout_s:
            msg = f"{where}[{SECTION}.dicom] timeout_s: must be less than collector_timeout_s"
            raise ConfigError(msg)
    elif settings.profile == "server":
        from agent.health.profiles.server import ServerTargets

        try:
            ServerTargets.parse(settings.profile_targets)
        except ConfigError as exc:
            msg = f"{where}{exc}"
            raise ConfigError(msg) from None


def replace(settings: AgentSettings, **changes: Any) -> AgentSettings:
    """A copy of ``settings`` with ``changes`` (checked like the file's values).

    Raises:
        ConfigError: naming the first bad key.
    """
    current = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.init}
    current.update(changes)
    try:
        parsed = {key: _PARSERS[key](value) for key, value in current.items()}
    except ValueError as exc:
        msg = f"bad agent setting: {exc}"
        raise ConfigError(msg) from None
    return AgentSettings(**parsed)
