"""Server settings: ``[server]`` of ``server.toml`` under ``FIELDLINK_*`` overrides."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

from server.config_file import FieldlinkSettings, load_settings
from server.kpi.config import KpiSettings
from server.mail import SmtpSettings
from server.notify.destinations import DestinationPolicy
from server.notify.rules import NotifyRule
from server.surveys.config import SurveySettings
from shared.tomlfile import resolve_config_path
from shared.wire import Severity

DEFAULT_CONFIG = Path("/etc/fieldlink/server.toml")


class ThresholdRule(BaseModel):
    """A warning when a metric crosses a bound, e.g. ``disk_percent:*`` above 90.

    ``metric`` may end in ``*`` to match every metric with that prefix.
    """

    metric: str
    above: float | None = None
    below: float | None = None
    severity: Severity = "warning"
    code: str | None = None


DEFAULT_THRESHOLDS = [
    ThresholdRule(metric="disk_percent:*", above=90.0, code="disk_full"),
    ThresholdRule(metric="mem_percent", above=95.0, code="memory_high"),
    ThresholdRule(metric="mfp.toner_*_percent", below=5.0, code="toner_low"),
]


class ServerSettings(FieldlinkSettings):
    """What the server reads from ``[server]``; each key has a ``FIELDLINK_<KEY>`` override."""

    database_url: str = "sqlite:////var/lib/fieldlink/fieldlink.db"
    #: ``mqtt://host:1883``, ``mqtts://host:8883``, or ``embedded``.
    broker_url: str = "embedded"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: Where the server keeps its keys, the embedded broker's files, recordings.
    state_dir: Path = Path("/var/lib/fieldlink")
    #: The public URL agents and the CLI use to reach this server.
    public_url: str | None = None
    #: The broker URL devices use (told to them at enrollment); default: ``broker_url``.
    device_broker_url: str | None = None
    #: Names this process in shared subscriptions and in session.open.
    instance_id: str | None = None
    log_level: str = "info"
    #: The bearer token a Prometheus scraper presents for the business gauges (fleet size,
    #: KPIs, costs) on ``/metrics`` or ``/metrics/business``; none: they are not served.
    metrics_token: SecretStr | None = None
    #: One JSON line per HTTP request and WebSocket (no tokens, cookies or secret query
    #: values), into the server's log or ``access_log_file``.
    access_log: bool = True
    access_log_file: Path | None = None

    # MQTT client identity of the server (mutual TLS in production).
    broker_ca: Path | None = None
    broker_cert: Path | None = None
    broker_key: Path | None = None
    broker_username: str | None = None
    broker_password: str | None = None
    #: Port of the embedded broker; 0 picks a free one.
    embedded_broker_port: int = Field(default=0, ge=0, le=65535)

    # Ingest.
    ingest_batch_size: int = Field(default=500, ge=1)
    ingest_flush_ms: int = Field(default=50, ge=1)
    #: A device silent for this long is marked offline (reason ``silent``).
    offline_after_s: float = Field(default=90.0, gt=0)
    #: A device whose clock is off by more than this is flagged.
    clock_skew_max_s: float = Field(default=60.0, gt=0)
    telemetry_retention_days: int = Field(default=30, ge=1)
    rollup_retention_days: int = Field(default=400, ge=1)
    thresholds: list[ThresholdRule] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))

    # The PKI's upkeep (server.upkeep).
    #: How often a broker update (CRL, ACL, certificate, reload) that failed is tried again.
    broker_update_retry_s: float = Field(default=30.0, gt=0)
    #: How often the CRL's age and the broker's and server's certificates are checked
    #: (the CRL is rewritten when 30 days old, certificates renewed 60 days before expiry).
    pki_check_interval_s: float = Field(default=3600.0, gt=0)

    # Operators.
    access_token_ttl_s: int = Field(default=3600, ge=60)
    #: The longest life of an API token (``POST /api/v1/auth/tokens``, ``fieldlink user
    #: token``); also their default.
    api_token_max_days: int = Field(default=90, ge=1, le=3650)
    #: Failed logins per user name (and per source address) in ``login_window_s``
    #: before that name (or address) is locked for ``login_lockout_s``.
    #: A name that logged in from an address within ``login_known_client_days`` is not
    #: held back by that address's lock (others' failures behind the same NAT).
    login_max_failures: int = Field(default=5, ge=1)
    login_ip_max_failures: int = Field(default=100, ge=1)
    login_window_s: float = Field(default=900, gt=0)
    login_lockout_s: float = Field(default=900, gt=0)
    login_known_client_days: float = Field(default=30, ge=0)
    #: Peers whose ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed (a reverse
    #: proxy's addresses or networks, ``*`` for any): the client's address then comes
    #: from the header. Empty (the default): the TCP peer is the client, always.
    forwarded_allow_ips: list[str] = Field(default_factory=list)
    #: Each failure answers this much later, up to ``login_max_delay_s``.
    login_delay_step_s: float = Field(default=0.25, ge=0)
    login_max_delay_s: float = Field(default=2.0, ge=0)
    #: Roles whose users must log in with a second factor (TOTP): until they have one,
    #: their logins may only enrol it (``POST /api/v1/auth/mfa``, the console's account page).
    mfa_required_roles: list[str] = Field(default_factory=list)
    #: The issuer name authenticator apps show next to the account.
    mfa_issuer: str = Field(default="fieldlink", min_length=1, max_length=64)
    #: The key that encrypts TOTP secrets at rest (default: ``state_dir/mfa.key``, made at
    #: first use, mode 0600). Losing it means every user enrols again.
    mfa_key_file: Path | None = None

    # Remote sessions.
    #: The SSH gateway for native clients (``ssh -p 2222 DEVICE@server``); 0 picks a free
    #: port, ``-1`` turns the gateway off.
    ssh_gateway_port: int = Field(default=2222, ge=-1, le=65535)
    #: Address the gateway listens on (default: ``http_host``).
    ssh_gateway_host: str | None = None
    #: How long the agent has to dial after ``session.open`` (also the one-time key's life;
    #: it covers a site's approval when consent is required).
    session_open_timeout_s: float = Field(default=120.0, gt=0)
    #: Server caps on every session (the agent applies the smaller of these and its policy).
    session_max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    session_idle_timeout_s: float = Field(default=15 * 60.0, gt=0)
    #: Open sessions at once, per device and per operator (409 beyond).
    sessions_per_device: int = Field(default=2, ge=1)
    sessions_per_operator: int = Field(default=5, ge=1)
    #: The URL agents dial for their tunnels to *this* process (default: ``public_url``).
    #: Behind a load balancer with several server processes, give each its own
    #: (``https://center-2.example``): the tunnel must reach the process that waits for it.
    tunnel_url: str | None = None
    #: How often live sessions and channels re-check that their user (enabled, role) and
    #: token (not revoked) still hold; ended with ``access_revoked`` otherwise.
    access_check_interval_s: float = Field(default=2.0, gt=0, le=60)
    #: A session whose operator's client (``fieldlink exec|connect|ssh``) sent no heartbeat
    #: for this long is closed with reason ``operator_gone``: its client was killed or lost
    #: the network. The client beats every third of it; the console's sessions have none.
    operator_heartbeat_timeout_s: float = Field(default=90.0, ge=1, le=3600)
    #: Where shell recordings go (default: ``state_dir/recordings``).
    recordings_dir: Path | None = None
    #: How often this process refreshes its liveness record (``server_instance``).
    instance_heartbeat_s: float = Field(default=10.0, gt=0, le=3600)
    #: A server whose heartbeat has not moved for this long (as seen by another server)
    #: is dead: its open sessions are closed with reason ``server_restart``. Keep it
    #: several heartbeats long.
    instance_dead_after_s: float = Field(default=60.0, gt=0, le=86400)

    #: Largest incident CSV import accepted, in bytes (413 beyond).
    incident_import_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    #: Largest JSON or form request body accepted, in bytes (413 beyond; CSV imports have
    #: ``incident_import_max_bytes``).
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=4096)

    #: The country (ISO 3166 alpha-2) a caller's number without ``+`` is read in when the
    #: call names no customer (``/desk/call``, ``/api/v1/lookup``); none: only ``+`` numbers.
    phone_default_region: str | None = Field(default=None, pattern="^[A-Z]{2}$")

    # Incidents and KPIs (``[server.kpi]``): baseline fallbacks, dispatch costs.
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    # Customer surveys after closed incidents, follow-ups (``[server.survey]``).
    survey: SurveySettings = Field(default_factory=SurveySettings)

    # Notifications (``[[server.notify]]`` rules, e-mail through ``[server.smtp]``).
    notify: list[NotifyRule] = Field(default_factory=list)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    #: How often the notification worker turns events into messages and delivers them.
    notify_interval_s: float = Field(default=5.0, gt=0, le=3600)
    #: Attempts at delivering one message before it is given up (``dead``).
    notify_max_attempts: int = Field(default=10, ge=1, le=100)
    #: The wait after the first failed attempt; it doubles at each further one, up to
    #: ``notify_retry_max_s``.
    notify_retry_base_s: float = Field(default=30.0, gt=0)
    notify_retry_max_s: float = Field(default=3600.0, gt=0)
    #: Networks a webhook may reach although they are loopback, link-local, multicast or
    #: reserved (or private, with ``notify_webhook_block_private``): ``["127.0.0.1/32"]``
    #: for a receiver on the server's own host. See :mod:`server.notify.destinations`.
    notify_webhook_allow: list[str] = Field(default_factory=list)
    #: Refuse webhooks to private networks (10/8, 172.16/12, 192.168/16, fc00::/7) as well.
    notify_webhook_block_private: bool = False

    @field_validator("notify_webhook_allow")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        import ipaddress

        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                msg = f"not an IP network: {network!r} (e.g. 127.0.0.1/32 or 10.0.0.0/8)"
                raise ValueError(msg) from None
        return networks

    def webhook_policy(self) -> DestinationPolicy:
        """Where this server's webhooks may post (:mod:`server.notify.destinations`)."""
        return DestinationPolicy.of(
            self.notify_webhook_allow, block_private=self.notify_webhook_block_private
        )

    @field_validator("notify")
    @classmethod
    def _unique_rule_names(cls, rules: list[NotifyRule]) -> list[NotifyRule]:
        names = [rule.name for rule in rules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            msg = f"rule names must be unique: {', '.join(twice)}"
            raise ValueError(msg)
        return rules


def load_server_settings(path: Path | None = None, **overrides: object) -> ServerSettings:
    """Load ``[server]`` from ``path``, ``FIELDLINK_CONFIG`` or ``/etc/fieldlink/server.toml``."""
    return load_settings(
        ServerSettings, resolve_config_path(path, DEFAULT_CONFIG), "server", **overrides
    )
