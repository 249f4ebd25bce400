"""The many-sessions phase of :mod:`bench.sessions`: sessions open together, and their memory.

As many ``ssh -tt`` logins through the OpenSSH tunnel are the baseline
(:func:`openssh_memory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from bench._openssh import OpenSSHTunnel
from bench.sessions_setup import Bench, login_shell_command
from bench.sessions_shells import Click, ProcessShell, TerminalShell, click_to_shell, ssh_shell
from tests.fixtures.processes import AgentProcess


def _memory(process: psutil.Process) -> tuple[float, float]:
    """RSS and PSS in MiB."""
    info = process.memory_full_info()
    return info.rss / 2**20, getattr(info, "pss", info.rss) / 2**20


def _children_memory(processes: list[psutil.Process]) -> tuple[float, float, int]:
    rss = pss = 0.0
    count = 0
    for parent in processes:
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                r, p = _memory(child)
                rss, pss, count = rss + r, pss + p, count + 1
    return rss, pss, count


async def concurrent_phase(
    bench: Bench, devices: list[str], agents: list[AgentProcess], count: int, at_once: int
) -> dict[str, Any]:
    """``count`` sessions open together, spread over the agents, each at a prompt.

    At most ``at_once`` are being opened at any moment (operators do not all
    click in the same millisecond; see the notes for a burst of 100).
    """
    assert bench.server.process is not None
    server = psutil.Process(bench.server.process.pid)
    agent_ps = [psutil.Process(a.process.pid) for a in agents if a.process is not None]
    # One session per agent first: each imports its session stack (asyncssh,
    # websockets, cryptography) with its first session, once.
    for device_id in devices:
        click, shell = await click_to_shell(bench, device_id)
        await shell.close()
        await bench.close_session(click.session_id)
    await asyncio.sleep(1.0)
    before = {"server": _memory(server),
              "agents": tuple(map(sum, zip(*(_memory(p) for p in agent_ps), strict=True)))}  # fmt: skip

    failures: list[str] = []
    started = time.perf_counter()
    gate = asyncio.Semaphore(at_once)

    async def one(index: int) -> tuple[Click, TerminalShell] | None:
        try:
            async with gate, asyncio.timeout(120):
                return await click_to_shell(bench, devices[index % len(devices)])
        except Exception as exc:  # counted and reported, not raised
            failures.append(f"open {index}: {type(exc).__name__}: {exc}")
            return None

    opened = [r for r in await asyncio.gather(*(one(i) for i in range(count))) if r is not None]
    all_ready_s = time.perf_counter() - started
    ready_ms = [(click.prompt - click.clicked) * 1000 for click, _ in opened]

    async def works(index: int, shell: TerminalShell) -> None:
        try:
            async with asyncio.timeout(60):
                await shell.send(f"echo ok-$(({index}+1000))\n".encode())
                output = b""
                while f"ok-{index + 1000}".encode() not in output.replace(b"ok-$((", b""):
                    output += await shell.read()
        except Exception as exc:
            failures.append(f"command {index}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(works(i, shell) for i, (_click, shell) in enumerate(opened)))
    await asyncio.sleep(1.0)
    after = {"server": _memory(server),
             "agents": tuple(map(sum, zip(*(_memory(p) for p in agent_ps), strict=True)))}  # fmt: skip
    shells = _children_memory(agent_ps)

    async def close(click: Click, shell: TerminalShell) -> None:
        try:
            async with gate:
                await shell.close()
                row = await bench.close_session(click.session_id)
            if row["state"] != "closed" or row["close_reason"] != "operator":
                failures.append(f"close {click.session_id}: {row['state']} {row['close_reason']}")
        except Exception as exc:
            failures.append(f"close {click.session_id}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(close(click, shell) for click, shell in opened))
    return {
        "count": count, "opened": len(opened), "failures": failures, "all_ready_s": all_ready_s,
        "ready_ms": ready_ms, "before": before, "after": after, "shells": shells,
        "agents": len(agents), "at_once": at_once,
    }  # fmt: skip


async def openssh_memory(
    tunnel: OpenSSHTunnel, count: int, workdir: Path, at_once: int
) -> dict[str, Any] | None:
    """The same number of ``ssh -tt`` logins through the OpenSSH tunnel.

    What the device side gains per login: sshd's session processes and the
    ``ssh -R`` client carrying the channels (not the shells, counted apart).
    """
    assert tunnel.daemon is not None
    assert tunnel.client is not None
    daemon = psutil.Process(tunnel.daemon.pid)
    client = psutil.Process(tunnel.client.pid)

    def sshd_memory() -> tuple[float, float]:
        rss = pss = 0.0
        for process in [client, daemon, *daemon.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if process.name().startswith(("sshd", "ssh")):
                    r, p = _memory(process)
                    rss, pss = rss + r, pss + p
        return rss, pss

    before = sshd_memory()
    shells: list[ProcessShell] = []
    failures = 0
    gate = asyncio.Semaphore(at_once)
    command = tunnel.login_command(tunnel.ports["sshd"], *login_shell_command(workdir))

    async def login() -> None:
        nonlocal failures
        async with gate:
            shell = await ssh_shell(command)
            shells.append(shell)
            try:
                await shell.until_prompt(60)
            except Exception:  # counted
                failures += 1

    try:
        await asyncio.gather(*(login() for _ in range(count)))
        await asyncio.sleep(1.0)
        after = sshd_memory()
    finally:
        await asyncio.gather(*(shell.close() for shell in shells), return_exceptions=True)
    return {"before": before, "after": after, "failures": failures}
