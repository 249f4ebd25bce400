"""How the agent's links connect: the broker's TLS context, reconnect jitter, device-tagged logs.

Used by :class:`agent.health.link.BrokerLink`, the agent (:mod:`agent.supervisor`) and
the certificate renewer (:mod:`agent.identity.renewer`).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from shared.broker_url import BrokerAddress
from shared.errors import ConfigError


class DeviceLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``device_id`` to every record (a field in JSON logs, a prefix in plain text)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[device={extra.get('device_id')}] {msg}", kwargs


def reconnect_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first after a loss).

    Full jitter above a floor: uniform between ``min_s`` and ``min_s * 2**(attempt+1)``,
    capped at ``max_s``. The floor keeps a failing broker from being hammered; the
    jitter spreads a fleet's reconnects over the whole window.
    """
    ceiling = min(max_s, min_s * 2.0 ** min(attempt + 1, 30))
    return rng.uniform(min_s, max(min_s, ceiling))


def tls_context(
    broker: BrokerAddress,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> ssl.SSLContext | None:
    """The TLS context for the broker: verify it by ``ca_file``, present our certificate.

    Returns ``None`` for plain ``mqtt://`` without any TLS file.

    Raises:
        ConfigError: naming the file that cannot be loaded.
    """
    if not broker.tls and ca_file is None and cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        msg = f"[agent] ca_file: cannot load {ca_file}: {exc}"
        raise ConfigError(msg) from exc
    if cert_file is not None:
        # Name the file at fault: ssl reports a key it cannot open as a certificate error.
        for name, path in (("cert_file", cert_file), ("key_file", key_file)):
            if path is not None:
                _check_readable(name, path)
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            msg = f"[agent] cert_file/key_file: cannot load {cert_file} with {key_file}: {exc}"
            raise ConfigError(msg) from exc
    return context


def _check_readable(name: str, path: Path) -> None:
    """Raise a :class:`ConfigError` naming ``path`` when this process cannot read it."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        msg = (
            f"[agent] {name}: cannot read {path}: {exc.strerror or exc} "
            f"(the agent runs as uid {os.getuid()})"
        )
        raise ConfigError(msg) from exc
