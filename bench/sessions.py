"""Remote sessions end to end: click to shell, keystrokes, throughput, 100 sessions at once.

Everything as production runs it, on loopback: ``fieldlink server run`` (SQLite,
the device CA, signed commands) with a TLS Mosquitto, real enrolled agents
(``fieldlink agent run``), and the operator's side through the public API
only, as the console and the CLI use it. The OpenSSH baseline is an ``ssh -R``
reverse tunnel to a private sshd (:mod:`bench._openssh`), measured in the
same run to the same targets.

- Click to shell: from ``POST /api/v1/devices/{id}/sessions`` to a ready
  shell prompt on ``WS /api/v1/sessions/{id}/terminal``, p50/p95 over
  ``--sessions`` sessions opened one after another; with the pieces (API
  answer, ``session.open`` on the agent, the agent's tunnel dialed, SSH
  ready on the server, shell channel open, prompt) from the bench's clock
  and the two processes' logs.
- Keystroke round trip: one byte typed into a shell until its echo comes
  back, through the browser-terminal socket, through the SSH gateway
  (``ssh -p PORT DEVICE@server``, when the server has it) and through
  ``ssh -tt`` over the OpenSSH tunnel; a shell in a local PTY gives the
  floor (what no tunnel can take away).
- Throughput: a length-prefixed push to a byte sink behind the agent's
  ``sink`` service, and a pull from it, through the forward socket (the
  bench's own WebSocket client), through ``fieldlink connect`` and through
  ``scp`` via the gateway, each as a ratio to the OpenSSH tunnel (``scp``
  with the private sshd through it for the scp rows); median of 3, with the
  CPU seconds per GiB of every process on the path.
- 100 sessions open together on one server (spread over a few agents, at
  most ``--open-at-once`` being opened at a time): each with a terminal at a
  prompt, then a command in every one; the memory each process gained per
  session against as many OpenSSH logins, and how many failed.

Every shell gets a home with Debian's default profile (``/etc/skel``), so the
prompt measures a device's shell, not this machine's ``pyenv init``.

This module is the command line and the run; the pieces live beside it:
:mod:`bench.sessions_setup` (the center, the agents, the operator),
:mod:`bench.sessions_shells` (the three ways into a shell),
:mod:`bench.sessions_latency` (click to shell, keystrokes),
:mod:`bench.sessions_throughput` (the sink and the transfers),
:mod:`bench.sessions_many` (sessions at once) and :mod:`bench.sessions_report`.

    .venv/bin/python -m bench.sessions [--sessions 50] [--megabytes 256]
        [--concurrent 100] [--agents 4] [--open-at-once 10] [--keystrokes 400]
        [--only click,keys,rate,many] [--keep] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2 as httpx

from bench._openssh import OpenSSHMissing, OpenSSHTunnel
from bench.sessions_latency import click_phase, keystroke_phase
from bench.sessions_many import concurrent_phase, openssh_memory
from bench.sessions_report import Loads, report
from bench.sessions_setup import (
    Bench,
    add_operator,
    add_operator_key,
    center,
    gateway_port,
    start_agent,
)
from bench.sessions_throughput import login_cli, sink_main, throughput_phase
from tests.fixtures.processes import AgentProcess, wait_until

RESULTS = Path(__file__).parent / "results" / "sessions.md"


async def _measure(
    bench: Bench,
    devices: list[str],
    agents: list[AgentProcess],
    sink_port: int,
    args: argparse.Namespace,
    loads: Loads,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    tunnel: OpenSSHTunnel | None = OpenSSHTunnel(
        bench.workdir / "openssh", {"sink": sink_port, "sshd": None}
    )
    assert tunnel is not None
    tunnel.workdir.mkdir()
    try:
        await asyncio.to_thread(tunnel.start)
    except OpenSSHMissing as exc:
        results["openssh_missing"] = str(exc)
        tunnel = None
    try:
        if "click" in args.only:
            with loads.phase("click to shell"):
                results["click"] = await click_phase(
                    bench, devices[0], args.sessions, agents[0].log_path
                )
        if "keys" in args.only:
            with loads.phase("keystrokes"):
                results["keys"] = await keystroke_phase(bench, devices[0], tunnel, args.keystrokes)
        if "rate" in args.only:
            with loads.phase("throughput"):
                results["rate"] = await throughput_phase(
                    bench, devices[0], agents[0], tunnel, args.megabytes
                )
        if "many" in args.only:
            with loads.phase(f"{args.concurrent} sessions at once"):
                results["many"] = await concurrent_phase(
                    bench, devices, agents, args.concurrent, args.open_at_once
                )
            if tunnel is not None:
                with loads.phase(f"{args.concurrent} OpenSSH logins at once"):
                    results["many_openssh"] = await openssh_memory(
                        tunnel, args.concurrent, bench.workdir, args.open_at_once
                    )
    finally:
        if tunnel is not None:
            await asyncio.to_thread(tunnel.stop)
    return results


def run(args: argparse.Namespace) -> str:
    """Start the scene, measure the phases in ``args.only``, and return the report."""
    loads = Loads()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sessions", "--sink"], stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    agents: list[AgentProcess] = []
    try:
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        files = workdir / "device-files"
        files.mkdir()
        per_agent = -(-args.concurrent // args.agents)
        settings = {
            "sessions_per_device": per_agent + 2,
            "sessions_per_operator": args.concurrent + 10,
            "ssh_gateway_port": 0,
        }
        with center(workdir, f"sqlite:///{workdir / 'fieldlink.db'}", **settings) as server:
            devices: list[str] = []
            for index in range(args.agents):
                device_id, agent = start_agent(
                    server, workdir, f"BENCH-{index}", {"sink": f"127.0.0.1:{sink_port}"},
                    max_sessions=per_agent + 2,
                )  # fmt: skip
                devices.append(device_id)
                agents.append(agent)
            for device_id in devices:
                wait_until(lambda d=device_id: server.device(d)["online"], timeout=60)
            token = add_operator(server)
            gateway = gateway_port(server) if add_operator_key(server, workdir) else None

            async def measure() -> dict[str, Any]:
                async with httpx.AsyncClient(
                    base_url=f"{server.url}/api/v1",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=120,
                    limits=httpx.Limits(max_connections=200),
                ) as http:
                    bench = Bench(server, token, http, workdir, gateway)
                    if "rate" in args.only:
                        await asyncio.to_thread(login_cli, bench)
                    return await _measure(bench, devices, agents, sink_port, args, loads)

            results = asyncio.run(measure())
            results["gateway"] = gateway is not None
    finally:
        for agent in agents:
            agent.stop()
        sink.terminate()
        sink.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(results, loads, args)


def main() -> None:
    """The command line (``--sink``: be the byte sink, for :func:`run`)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--keystrokes", type=int, default=400)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument(
        "--open-at-once", type=int, default=10, help="sessions being opened at any moment"
    )
    parser.add_argument(
        "--only", default="click,keys,rate,many", help="phases: click,keys,rate,many"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        asyncio.run(sink_main())
        return
    args.only = set(args.only.split(","))
    text = run(args)
    if not args.no_write:
        RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
