"""Prometheus metrics of the server, in two registries.

:data:`REGISTRY` holds the operational metrics (ingest, sessions, the process's
CPU and memory): ``/metrics`` serves them to anyone who can reach it.
:data:`BUSINESS_REGISTRY` holds what the business would not publish: the fleet's
size and the KPIs (costs saved, dispatches...). ``/metrics`` adds them only for a
scraper that presents ``metrics_token`` as a bearer token, and
``/metrics/business`` serves them alone (same token). Serve them with::

    body, content_type = render_metrics(business=True)
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
#: The business figures: behind ``metrics_token``.
BUSINESS_REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_MESSAGES = Counter(
    "fieldlink_ingest_messages",
    "MQTT messages the ingest handled, by result: stored, duplicate, rejected, state, "
    "stale_state, event, command_result, ignored, error.",
    ["result"],
    registry=REGISTRY,
)
INGEST_REJECTED = Counter(
    "fieldlink_ingest_rejected",
    "Messages rejected, by reason: bad_json, bad_shape, oversize, device_mismatch, "
    "unregistered, revoked (the device's certificate was revoked), bad_topic, not_bound (a "
    "gateway spoke for a device the registry does not bind to it).",
    ["reason"],
    registry=REGISTRY,
)
TELEMETRY_MISSING = Counter(
    "fieldlink_telemetry_missing",
    "Health samples counted missing from gaps in a boot's sequence numbers "
    "(net: a late sample that fills a gap is subtracted again).",
    registry=REGISTRY,
)
TELEMETRY_SEQ_RESETS = Counter(
    "fieldlink_telemetry_seq_resets",
    "Implausible jumps of a boot's sequence numbers (more than a million either way), "
    "taken as a new stream rather than counted as missing samples.",
    registry=REGISTRY,
)
TELEMETRY_RESEND_REQUESTS = Counter(
    "fieldlink_telemetry_resend_requests",
    "telemetry.resend commands sent to devices with samples counted missing "
    "(at most one a minute per device).",
    registry=REGISTRY,
)
TELEMETRY_TS_UNTRUSTED = Counter(
    "fieldlink_telemetry_ts_untrusted",
    "Health samples whose ts was implausibly far from the server's clock: stored with the "
    "server's receive time and flagged ts_untrusted.",
    registry=REGISTRY,
)
TELEMETRY_LATE = Counter(
    "fieldlink_telemetry_late",
    "Health samples that arrived after a later one of the same boot and filled a gap.",
    registry=REGISTRY,
)
OUTBOX_DROPPED = Counter(
    "fieldlink_agent_outbox_dropped",
    "Samples the agents reported dropping from a full outbox.",
    registry=REGISTRY,
)
DEVICES_ONLINE = Gauge(
    "fieldlink_devices_online",
    "Registered devices currently online (refreshed by the sweeper).",
    registry=BUSINESS_REGISTRY,
)
DEVICES_REGISTERED = Gauge(
    "fieldlink_devices_registered",
    "Registered devices (refreshed by the sweeper).",
    registry=BUSINESS_REGISTRY,
)
ALERTS_OPEN = Gauge(
    "fieldlink_alerts_open",
    "Open alerts (refreshed by the sweeper).",
    registry=REGISTRY,
)
INGEST_LATENCY = Histogram(
    "fieldlink_ingest_latency_seconds",
    "From the agent's sent_at (or the server's receive time when absent) to the row committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
INGEST_QUEUE_DEPTH = Gauge(
    "fieldlink_ingest_queue_depth",
    "Messages received and waiting for the database writer.",
    registry=REGISTRY,
)
INGEST_BATCH_SIZE = Histogram(
    "fieldlink_ingest_batch_size",
    "Messages per database write batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=REGISTRY,
)
INGEST_FLUSH_SECONDS = Histogram(
    "fieldlink_ingest_flush_seconds",
    "Time to write one batch to the database.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
INGEST_CONNECTED = Gauge(
    "fieldlink_ingest_broker_connected",
    "1 while the ingest is connected and subscribed to the broker.",
    registry=REGISTRY,
)
INGEST_RECONNECTS = Counter(
    "fieldlink_ingest_broker_reconnects",
    "Times the ingest lost the broker and connected again.",
    registry=REGISTRY,
)

SESSIONS_OPEN = Gauge(
    "fieldlink_sessions_open",
    "Remote sessions this process follows, by state.",
    ["state"],
    registry=REGISTRY,
)
SESSIONS_CLOSED = Counter(
    "fieldlink_sessions_closed",
    "Remote sessions closed, by close reason.",
    ["close_reason"],
    registry=REGISTRY,
)
SESSION_SETUP_SECONDS = Histogram(
    "fieldlink_session_setup_seconds",
    "From the session request to the agent's authenticated tunnel.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
SESSION_BYTES = Counter(
    "fieldlink_session_bytes",
    "Tunnel bytes of closed sessions, by direction.",
    ["direction"],
    registry=REGISTRY,
)

# The PKI and the broker's copy of it (set by server.upkeep and on each revocation).
BROKER_REVOCATIONS_PENDING = Gauge(
    "fieldlink_broker_revocations_pending",
    "Revoked devices the broker does not refuse yet (its CRL/ACL update is not applied).",
    registry=REGISTRY,
)
BROKER_UPDATE_PENDING_SINCE = Gauge(
    "fieldlink_broker_update_pending_since_timestamp_seconds",
    "When the oldest change the broker does not have yet was made (0: none pending).",
    registry=REGISTRY,
)
BROKER_UPDATE_ATTEMPTS = Gauge(
    "fieldlink_broker_update_failed_attempts",
    "Failed attempts to apply the pending broker update (0 once applied).",
    registry=REGISTRY,
)
PKI_EXPIRY = Gauge(
    "fieldlink_pki_expiry_timestamp_seconds",
    "When a part of the PKI expires, by item: ca, crl (its next update), broker_cert, "
    "server_cert (the server's MQTT client certificate).",
    ["item"],
    registry=REGISTRY,
)
DEVICE_CERTS_EXPIRING = Gauge(
    "fieldlink_device_certificates_expiring",
    "Unrevoked devices whose newest certificate expires within 30 days (or has expired).",
    registry=REGISTRY,
)

# Notifications (server.notify.worker).
NOTIFY_SENT = Counter(
    "fieldlink_notify_sent",
    "Notification messages delivered, by channel (webhook, email).",
    ["channel"],
    registry=REGISTRY,
)
NOTIFY_FAILED = Counter(
    "fieldlink_notify_failed",
    "Notification delivery attempts that failed, by channel (each attempt counts).",
    ["channel"],
    registry=REGISTRY,
)
NOTIFY_RETRIED = Counter(
    "fieldlink_notify_retried",
    "Failed notification deliveries scheduled to be tried again, by channel.",
    ["channel"],
    registry=REGISTRY,
)
NOTIFY_DEAD = Counter(
    "fieldlink_notify_dead",
    "Notification messages given up after notify_max_attempts (or whose rule is gone).",
    ["channel"],
    registry=REGISTRY,
)
NOTIFY_QUEUED = Gauge(
    "fieldlink_notify_queued",
    "Notification messages waiting for delivery (refreshed by the worker).",
    registry=REGISTRY,
)


def render_metrics(*, operational: bool = True, business: bool = False) -> tuple[bytes, str]:
    """The chosen registries in the Prometheus text format, and its content type."""
    body = b""
    if operational:
        body += generate_latest(REGISTRY)
    if business:
        body += generate_latest(BUSINESS_REGISTRY)
    return body, CONTENT_TYPE_LATEST
