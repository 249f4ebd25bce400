"""DICOM C-ECHO to a peer with pynetdicom, as ``echoscu`` would: associate, echo, release.

The imaging profile (:mod:`agent.health.profiles.imaging`) echoes each of its
peers through an :class:`EchoWorker`: pynetdicom is blocking and thread-based,
so each echo runs in a worker thread with one time bound over the whole
exchange. pynetdicom is imported on the first echo only (the idle agent's
memory budget). A failed echo says why (:data:`EchoFailure`); the profile's
docstring explains what each reason tells the field engineer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agent.health.profiles.imaging import DicomPeer

EchoFailure = Literal["refused", "timeout", "unreachable", "rejected", "aborted", "failed"]


@dataclass(frozen=True, slots=True)
class EchoResult:
    """What one C-ECHO gave.

    Attributes:
        failure: ``None`` after a good echo, else why it failed.
        elapsed_ms: From the connection to the echo's answer (association included).
        detail: One line for the fault's message.
    """

    failure: EchoFailure | None
    elapsed_ms: float
    detail: str = ""


def _connect_failure(host: str, port: int, timeout_s: float) -> tuple[EchoFailure, str]:
    """Why a TCP connection to the peer fails (pynetdicom only logs it).

    A second attempt, made only after pynetdicom's own failed: the peer may have
    come back in between, which the message then says.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return "refused", "connection refused (nothing listens on that port)"
    except TimeoutError:
        return "timeout", "timed out connecting (no answer to the TCP connection)"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable", f"unreachable ({os.strerror(exc.errno)})"
        return "failed", f"connection failed ({exc.strerror or exc})"
    return "failed", "connection failed, and a retry right after was accepted"


_PATCHED: list[bool] = []


def _load_pynetdicom() -> None:
    """Import pynetdicom (on the first echo) and mend how it drops a refused connection's socket.

    pynetdicom 3.0 calls ``shutdown()`` then ``close()`` on the socket of a
    connection that failed, and ``shutdown()`` of a never-connected socket
    raises, so ``close()`` is skipped (pynetdicom#979, fixed upstream by #999).
    Here every such socket is closed, whatever ``shutdown()`` says.
    """
    if _PATCHED:
        return
    import pynetdicom.transport

    def _shutdown_socket(self: pynetdicom.transport.AssociationSocket) -> None:
        sock = self.socket
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # never connected, or the peer already closed it
        finally:
            sock.close()

    pynetdicom.transport.AssociationSocket._shutdown_socket = _shutdown_socket  # type: ignore[method-assign]
    # Each failed echo is reported once, by this profile; pynetdicom would add its own errors.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    _PATCHED.append(True)


def echo_peer(peer: DicomPeer, calling_ae_title: str, timeout_s: float) -> EchoResult:
    """Associate with ``peer``, send a C-ECHO and release: blocking.

    Each phase (connection, association, echo) is bounded by half of
    ``timeout_s``, so that the caller's bound of ``timeout_s`` over the whole
    exchange only fires when a peer answers slowly at every step.
    """
    _load_pynetdicom()
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    timeout_s /= 2

    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        infos = socket.getaddrinfo(peer.host, peer.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return EchoResult("unreachable", elapsed(), f"host name not resolved ({exc.strerror})")
    # pynetdicom connects to the first IPv4 address, as it would resolve it itself.
    address = next((i[4][0] for i in infos if i[0] == socket.AF_INET), infos[0][4][0])
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = timeout_s
    ae.dimse_timeout = ae.network_timeout = timeout_s
    seen = {"connected": False, "peer_abort": False}

    def on_open(_event: Any) -> None:
        seen["connected"] = True

    def on_acse(event: Any) -> None:
        if isinstance(event.primitive, A_ABORT | A_P_ABORT):
            seen["peer_abort"] = True

    started = time.perf_counter()
    assoc = ae.associate(
        str(address),
        peer.port,
        ae_title=peer.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ACSE_RECV, on_acse)],
    )
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            took = elapsed()
            if not isinstance(status, Dataset) or "Status" not in status:
                if assoc.is_aborted:
                    return EchoResult("aborted", took, "association aborted during the C-ECHO")
                return EchoResult(
                    "timeout", took, f"timed out (no C-ECHO response within {timeout_s:g} s)"
                )
            assoc.release()
            if int(status.Status) != 0:
                return EchoResult("failed", took, f"C-ECHO status 0x{int(status.Status):04X}")
            return EchoResult(None, took)
        if assoc.is_rejected:
            answer = assoc.acceptor.primitive
            reason = (
                f"{answer.result_str}, by the {answer.source_str}: {answer.reason_str}"
                if answer is not None
                else "no reason given"
            )
            return EchoResult(
                "rejected",
                elapsed(),
                f"association rejected ({reason}); is {calling_ae_title!r} configured on the peer?",
            )
        if not seen["connected"]:
            # Half of the phase's bound: the whole still ends within the caller's.
            failure, detail = _connect_failure(str(address), peer.port, timeout_s / 2)
            return EchoResult(failure, elapsed(), detail)
        answer = assoc.acceptor.primitive
        if answer is not None and answer.result == 0x00:
            # Accepted, but without the Verification SOP class: pynetdicom aborted it.
            return EchoResult(
                "failed",
                elapsed(),
                "the peer accepted the association but not the Verification SOP class (C-ECHO)",
            )
        if seen["peer_abort"]:
            return EchoResult("aborted", elapsed(), "association aborted by the peer")
        return EchoResult(
            "timeout", elapsed(), f"timed out (no association response within {timeout_s:g} s)"
        )
    finally:
        if assoc.is_alive():
            assoc.abort()


class EchoWorker:
    """One peer's echoes: at most one thread at a time, even when a call outlives its bound."""

    def __init__(self, peer: DicomPeer) -> None:
        self.peer = peer
        self._running: asyncio.Future[EchoResult] | None = None

    async def echo(self, calling_ae_title: str, timeout_s: float) -> EchoResult:
        """One echo in a worker thread, bounded by ``timeout_s`` over the whole exchange."""
        if self._running is not None and not self._running.done():
            return EchoResult(
                "timeout", timeout_s * 1000, "timed out (the previous echo is still waiting)"
            )
        self._running = asyncio.ensure_future(
            asyncio.to_thread(echo_peer, self.peer, calling_ae_title, timeout_s)
        )
        try:
            # The phases are bounded one by one in the thread; the whole, here.
            return await asyncio.wait_for(asyncio.shield(self._running), timeout_s)
        except TimeoutError:
            return EchoResult(
                "timeout", timeout_s * 1000, f"timed out (no answer within {timeout_s:g} s)"
            )
