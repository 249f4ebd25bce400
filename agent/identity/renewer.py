"""The agent's periodic certificate check: renew when due, reconnect with the new pair, confirm.

:class:`CertificateRenewer` runs in the agent (started by :mod:`agent.supervisor`):
it checks the certificate's expiry without cryptography
(:func:`agent.identity.renew.needs_renewal`), renews it with
:func:`agent.identity.renew.renew_certificate` when it is due (retrying an
unreachable server with backoff), has the broker link reconnect with the new
files, and keeps them once the link has connected with them, or puts the
``*.prev`` pair back. The module docstring of :mod:`agent.identity.renew`
describes the files and the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from datetime import timedelta

from agent.config import AgentSettings
from agent.health.link import BrokerLink
from agent.health.link_setup import DeviceLogger, reconnect_delay, tls_context
from agent.identity.renew import (
    IdentityFiles,
    RenewalFailed,
    RenewalOutcome,
    discard_previous,
    needs_renewal,
    renew_certificate,
    restore_previous,
)
from shared.errors import FieldlinkError, UnavailableError
from shared.ids import utcnow

logger = logging.getLogger(__name__)


async def _sleep(stopping: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass


class CertificateRenewer:
    """Keeps this device's certificate current while the agent runs.

    Checks at start and every ``renew_check_interval_s``; when the certificate
    expires within ``renew_before_days``, renews it (retrying an unreachable
    server with backoff), has the broker link reconnect with the new pair, and
    keeps the new pair once the link has connected with it, or puts the old
    one back if it cannot within ``confirm_timeout_s``.

    Args:
        settings: The agent's configuration.
        link: The broker link to reconnect with the new pair.
        confirm_timeout_s: How long the new pair has to connect once (default:
            a minute, or more with slow reconnect settings).
        retry_min_s: Floor of the wait before retrying an unreachable server.
        retry_max_s: Cap of that wait.
        rng: Randomness of the retry jitter.
    """

    def __init__(
        self,
        settings: AgentSettings,
        link: BrokerLink,
        *,
        confirm_timeout_s: float | None = None,
        retry_min_s: float | None = None,
        retry_max_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        files = IdentityFiles.from_settings(settings)
        if files is None or settings.server_url is None:
            msg = "certificate renewal needs server_url, ca_file, cert_file and key_file"
            raise RenewalFailed(msg)
        self.settings = settings
        self.files = files
        self.link = link
        self.renew_before = timedelta(days=settings.renew_before_days)
        self.confirm_timeout_s = confirm_timeout_s or max(
            60.0, 2 * settings.reconnect_max_s + 2 * settings.keepalive_s
        )
        self.retry_min_s = retry_min_s or max(settings.reconnect_min_s, 1.0)
        self.retry_max_s = max(self.retry_min_s, retry_max_s or settings.reconnect_max_s)
        #: Renewals installed and confirmed by a connection, since start.
        self.renewed = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._log = DeviceLogger(logger, {"device_id": settings.device_id})

    @classmethod
    def from_settings(cls, settings: AgentSettings, link: BrokerLink) -> CertificateRenewer | None:
        """A renewer, or ``None`` when the configuration lacks what renewal needs."""
        if IdentityFiles.from_settings(settings) is None or settings.server_url is None:
            return None
        return cls(settings, link)

    async def run(self, stopping: asyncio.Event) -> None:
        """Check now and every ``renew_check_interval_s`` until ``stopping`` is set."""
        await self._confirm_pending()
        while not stopping.is_set():
            try:
                await self.check(stopping)
            except Exception:
                # A bug here must not take the agent down: the working pair is untouched.
                self._log.exception("unexpected error while renewing the certificate")
            await _sleep(stopping, self.settings.renew_check_interval_s)

    async def check(self, stopping: asyncio.Event) -> RenewalOutcome | None:
        """Renew the certificate if it is due, and switch the link to it.

        Returns:
            The installed renewal, or ``None`` when none was due or it failed
            (logged; the working pair is unchanged or back in place).
        """
        try:
            due = await asyncio.to_thread(
                needs_renewal, self.files.cert_file, utcnow(), self.renew_before
            )
        except RenewalFailed as exc:
            self._log.error("cannot check the certificate's expiry: %s", exc)
            return None
        if not due:
            self._log.debug("certificate not due for renewal")
            return None
        outcome = await self._renew(stopping)
        if outcome is None:
            return None
        self._log.info(
            "certificate renewed: serial %s, valid until %s; reconnecting with it",
            outcome.serial_hex,
            outcome.not_after.isoformat(),
        )
        if outcome.not_after - self.renew_before <= utcnow():
            self._log.warning(
                "renew_before_days (%g) is longer than the certificates' validity: "
                "the certificate will be renewed at every check",
                self.settings.renew_before_days,
            )
        if await self._switch_and_confirm():
            self.renewed += 1
            return outcome
        return None

    async def _renew(self, stopping: asyncio.Event) -> RenewalOutcome | None:
        attempt = 0
        while not stopping.is_set():
            try:
                return await renew_certificate(self.settings)
            except UnavailableError as exc:
                delay = reconnect_delay(attempt, self.retry_min_s, self.retry_max_s, self._rng)
                log = self._log.warning if attempt == 0 else self._log.info
                log("certificate renewal: %s; retrying in %.1f s", exc, delay)
                attempt += 1
                await _sleep(stopping, delay)
            except RenewalFailed as exc:
                self._log.error(
                    "%s; keeping the current certificate, next try in %.0f s",
                    exc,
                    self.settings.renew_check_interval_s,
                )
                return None
        return None

    async def _switch_and_confirm(self) -> bool:
        """Reconnect the link with the files on disk; keep them or roll back to ``*.prev``."""
        try:
            tls = await asyncio.to_thread(self._tls_context)
        except FieldlinkError as exc:
            self._log.error("the renewed pair cannot be loaded (%s); rolling back", exc)
        else:
            self.link.use_tls(tls)
            if await self.link.wait_connected_with(tls, self.confirm_timeout_s):
                await asyncio.to_thread(discard_previous, self.files)
                self._log.info("connected with the renewed certificate; previous pair deleted")
                return True
            self._log.error(
                "no connection with the renewed certificate within %.0f s; rolling back",
                self.confirm_timeout_s,
            )
        await self._roll_back()
        return False

    async def _roll_back(self) -> None:
        if not await asyncio.to_thread(restore_previous, self.files):
            return
        try:
            tls = await asyncio.to_thread(self._tls_context)
        except FieldlinkError as exc:
            self._log.error("the previous pair cannot be loaded either: %s", exc)
            return
        self.link.use_tls(tls)
        self._log.warning("the previous certificate is back in place")

    async def _confirm_pending(self) -> None:
        """A ``*.prev`` pair left by an earlier run: keep the live pair once it connects."""
        pending = await asyncio.to_thread(
            lambda: self.files.previous_cert_file.exists() and self.files.previous_key_file.exists()
        )
        if not pending or self.link.tls is None:
            return
        self._log.info("a renewal awaits its first connection; confirming it")
        if await self.link.wait_connected_with(self.link.tls, self.confirm_timeout_s):
            await asyncio.to_thread(discard_previous, self.files)
            self._log.info("connected with the renewed certificate; previous pair deleted")
        else:
            self._log.error("the renewed certificate did not connect; rolling back")
            await self._roll_back()

    def _tls_context(self) -> ssl.SSLContext:
        context = tls_context(
            self.settings.broker, self.files.ca_file, self.files.cert_file, self.files.key_file
        )
        if context is None:  # pragma: no cover - cert_file is set, so there is one
            msg = "no TLS context for the broker"
            raise RenewalFailed(msg)
        return context
