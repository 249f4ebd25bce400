"""Idle footprint of the real agent: resident memory and CPU at a 10 s interval.

Starts a real Mosquitto on a free loopback port, the agent as users start it
(``fieldlink agent run``), and in the same run the baselines: a bare Python
process, Python with psutil and paho-mqtt imported (what any Python MQTT agent
pays), and the agent with the click/typer command line kept resident (what
``fieldlink agent run`` would cost without handing over to ``python -m agent``).
Samples RSS and CPU seconds over about a minute and writes
bench/results/agent_footprint.md.

    .venv/bin/python -m bench.agent_footprint [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.sessions_report import pct
from tests.fixtures.mosquitto import MosquittoBroker

RESULTS = Path(__file__).parent / "results" / "agent_footprint.md"
INTERVAL_S = 10
WARMUP_S = 5.0

CLI_RESIDENT = (
    "import sys, shared.cli, typer, agent.cli; from agent.daemon import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Footprint:
    name: str
    rss_mib: float
    pss_mib: float
    cpu_s: float
    seconds: float

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.seconds


def _agent_config(directory: Path, broker: MosquittoBroker, device_id: str) -> Path:
    path = directory / f"{device_id}.toml"
    path.write_text(
        "[agent]\n"
        f'device_id = "{device_id}"\n'
        f'broker_url = "{broker.url}"\n'
        f"interval_s = {INTERVAL_S}\n"
        f'state_dir = "{directory / device_id}"\n'
        'log_level = "warning"\n'
    )
    return path


def _count_samples(broker: MosquittoBroker, counts: dict[str, int], stop: threading.Event) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        device = message.topic.split("/")[2]
        counts[device] = counts.get(device, 0) + 1

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe("fieldlink/v1/+/telemetry", qos=1)
    client.loop_start()
    stop.wait()
    client.loop_stop()
    client.disconnect()


def measure(seconds: float) -> list[Footprint]:
    """Run every process side by side and return their footprints."""
    python = sys.executable
    fieldlink = str(Path(python).with_name("fieldlink"))
    with MosquittoBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FIELDLINK_") and k != "MALLOC_ARENA_MAX"
        }
        sleep = f"import time; time.sleep({seconds + 60})"
        commands = {
            "bare python": [python, "-c", sleep],
            "python + psutil + paho-mqtt imported": [
                python,
                "-c",
                f"import psutil, paho.mqtt.client; {sleep}",
            ],
            "agent (fieldlink agent run)": [
                fieldlink,
                "agent",
                "run",
                "--config",
                str(_agent_config(directory, broker, "bench-agent")),
            ],
            "agent with the CLI kept resident": [
                python,
                "-c",
                CLI_RESIDENT,
                "run",
                "--config",
                str(_agent_config(directory, broker, "bench-cli")),
            ],
        }
        counts: dict[str, int] = {}
        stop = threading.Event()
        counter = threading.Thread(target=_count_samples, args=(broker, counts, stop))
        counter.start()
        processes = {
            name: subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
            for name, argv in commands.items()
        }
        try:
            time.sleep(WARMUP_S)
            watched = {name: psutil.Process(p.pid) for name, p in processes.items()}
            start = {name: sum(w.cpu_times()[:2]) for name, w in watched.items()}
            began = time.monotonic()
            peak = dict.fromkeys(watched, 0)
            peak_pss = dict.fromkeys(watched, 0)
            while time.monotonic() - began < seconds:
                for name, w in watched.items():
                    memory = w.memory_full_info()
                    peak[name] = max(peak[name], memory.rss)
                    peak_pss[name] = max(peak_pss[name], memory.pss)
                time.sleep(1.0)
            elapsed = time.monotonic() - began
            results = [
                Footprint(
                    name,
                    peak[name] / 2**20,
                    peak_pss[name] / 2**20,
                    sum(w.cpu_times()[:2]) - start[name],
                    elapsed,
                )
                for name, w in watched.items()
            ]
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            stop.set()
            counter.join()
        published = counts.get("bench-agent", 0)
        expected = int((seconds + WARMUP_S) / INTERVAL_S)
        if published < expected:
            msg = f"the agent published {published} samples, expected at least {expected}"
            raise RuntimeError(msg)
        return results


def report(results: list[Footprint], seconds: float) -> str:
    """The markdown section for docs/benchmarks.md."""
    bare = results[0]
    lines = [
        "## Agent footprint (idle, one sample every 10 s)",
        "",
        f"Measured over {seconds:.0f} s after a {WARMUP_S:.0f} s warm-up, side by side with a "
        "bare Python process on the same machine, against a real Mosquitto on loopback. "
        "RSS is the peak resident set (shared libraries counted whole); PSS shares them "
        "among the processes using them; CPU is user + system seconds over the window.",
        "",
        "| process | RSS (MiB) | RSS vs bare | PSS (MiB) | CPU (% of a core) | CPU s / min |",
        "|---|---|---|---|---|---|",
    ]
    for item in results:
        lines.append(
            f"| {item.name} | {item.rss_mib:.1f} | {item.rss_mib / bare.rss_mib:.2f}x "
            f"| {item.pss_mib:.1f} "
            f"| {item.cpu_percent:.3f} | {60 * item.cpu_s / item.seconds:.3f} |"
        )
    agent = next(r for r in results if r.name.startswith("agent (fieldlink"))
    resident = next(r for r in results if r.name.startswith("agent with the CLI"))
    lines += [
        "",
        f"Targets: <= 30 MB RSS and <= 0.2% of a core. The agent: {agent.rss_mib:.1f} MiB, "
        f"{agent.cpu_percent:.3f}% of a core. `fieldlink agent run` replaces itself with "
        "`python -m agent run` (same pid), which keeps click/typer out of the daemon: "
        f"keeping them resident would cost {resident.rss_mib - agent.rss_mib:+.1f} MiB. "
        "The agent never imports pydantic (it writes the HealthSample JSON itself; "
        "pydantic-settings alone costs about 23 MB).",
        "",
    ]
    return "\n".join(lines)


# -- a remote session: the agent's memory before, during and after it ---------------------

#: The agent with ``session_process = false``: sessions served in its own process.
IN_PROCESS = (
    "import os, sys; os.environ['FIELDLINK_SESSION_PROCESS'] = 'false'; "
    "from agent.daemon import main; sys.exit(main(sys.argv[1:]))"
)
#: Seconds between one session's close and the next click.
PAUSE_S = 3.0
MODES = {
    "session process (session_process = true, the default)": None,
    "in the agent's process (session_process = false)": [sys.executable, "-c", IN_PROCESS],
}


@dataclass
class SessionFootprint:
    """One agent's resident memory around remote sessions, and its click-to-shell times."""

    mode: str
    idle_mib: float = 0.0
    during_agent_mib: float = 0.0
    during_child_mib: float = 0.0
    after_first_mib: float = 0.0
    after_last_mib: float = 0.0
    spare_mib: float = 0.0
    after_linger_mib: float = 0.0
    cold_ms: float = 0.0
    clicks_ms: list[float] = field(default_factory=list)
    loaded_after: list[str] = field(default_factory=list)


def _rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def _settled_rss_mib(pid: int, seconds: float = 3.0) -> float:
    """The lowest RSS over a few seconds (the agent's timers may briefly allocate)."""
    samples = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        samples.append(_rss_mib(pid))
        time.sleep(0.25)
    return min(samples)


def _children(pid: int) -> list[psutil.Process]:
    return list(psutil.Process(pid).children(recursive=False))


def _session_children(pid: int) -> list[psutil.Process]:
    return [c for c in _children(pid) if "session_main" in " ".join(c.cmdline())]


async def _one_agent(
    bench: Any, device_id: str, pid: int, state_dir: Path, result: SessionFootprint, n: int
) -> None:
    from agent.remote.control import control_socket_path, request
    from agent.remote.session_process import SPARE_LINGER_S
    from bench.sessions_shells import click_to_shell

    result.idle_mib = await asyncio.to_thread(_settled_rss_mib, pid)
    for index in range(n + 1):
        click, shell = await click_to_shell(bench, device_id)
        if index == 0:  # cold: no spare yet, nothing in the page cache of this run
            result.cold_ms = (click.prompt - click.clicked) * 1000
        else:
            result.clicks_ms.append((click.prompt - click.clicked) * 1000)
        answer = await asyncio.to_thread(request, control_socket_path(state_dir), "footprint")
        serving = [psutil.Process(p) for p in answer["session_processes"]]
        if index == 0:
            result.during_agent_mib = _rss_mib(pid)
            result.during_child_mib = sum(c.memory_info().rss for c in serving) / 2**20
        await shell.close()
        await bench.close_session(click.session_id)
        deadline = time.monotonic() + 30
        while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in serving):
            if time.monotonic() > deadline:
                msg = "the session process outlived its session"
                raise RuntimeError(msg)
            await asyncio.sleep(0.05)
        # An operator's pause between two sessions (the same for both agents): the
        # spare has loaded the stack by the next click.
        await asyncio.sleep(PAUSE_S)
        if index == 0:
            result.after_first_mib = await asyncio.to_thread(_settled_rss_mib, pid)
    result.after_last_mib = await asyncio.to_thread(_settled_rss_mib, pid)
    result.spare_mib = sum(c.memory_info().rss for c in _session_children(pid)) / 2**20
    if result.spare_mib:
        await asyncio.sleep(SPARE_LINGER_S + 2)
        if _session_children(pid):
            msg = "the spare session process outlived its linger"
            raise RuntimeError(msg)
        result.after_linger_mib = await asyncio.to_thread(_settled_rss_mib, pid)
    answer = await asyncio.to_thread(request, control_socket_path(state_dir), "footprint")
    result.loaded_after = list(answer["loaded"])


def measure_sessions(sessions: int) -> list[SessionFootprint]:
    """Both agents side by side on one center: ``sessions`` sessions each, one at a time."""
    import httpx2 as httpx

    from bench.sessions_setup import Bench, add_operator, center, start_agent
    from tests.fixtures.processes import wait_until

    workdir = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    (workdir / "device-files").mkdir()
    agents = []
    try:
        database = f"sqlite:///{workdir / 'fieldlink.db'}"
        with center(workdir, database, sessions_per_device=4) as server:
            started = {}
            for index, (mode, command) in enumerate(MODES.items()):
                device_id, agent = start_agent(
                    server, workdir, f"FOOT-{index}", {}, max_sessions=2, command=command
                )
                agents.append(agent)
                started[mode] = (device_id, agent, workdir / f"device-FOOT-{index}" / "state")
            for device_id, _, _ in started.values():
                wait_until(lambda d=device_id: server.device(d)["online"], timeout=60)
            token = add_operator(server)
            time.sleep(WARMUP_S)

            async def run() -> list[SessionFootprint]:
                async with httpx.AsyncClient(
                    base_url=f"{server.url}/api/v1",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=120,
                ) as http:
                    bench = Bench(server, token, http, workdir)
                    results = []
                    for mode, (device_id, agent, state_dir) in started.items():
                        assert agent.process is not None
                        result = SessionFootprint(mode)
                        await _one_agent(
                            bench, device_id, agent.process.pid, state_dir, result, sessions
                        )
                        results.append(result)
                    return results

            return asyncio.run(run())
    finally:
        for agent in agents:
            agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)


SESSION_STACK = "import agent.remote.session_main, agent.remote.sshd, websockets.asyncio.client"


def session_process_start(runs: int = 5) -> tuple[float, float, float]:
    """Median wall and CPU milliseconds to start a Python with the session stack, and bare."""
    import resource

    def timed(code: str) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True)
        wall = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall * 1000, cpu * 1000

    stack = [timed(SESSION_STACK) for _ in range(runs)]
    bare = [timed("pass") for _ in range(runs)]
    median = sorted(stack)[runs // 2]
    return median[0], sorted(c for _, c in stack)[runs // 2], sorted(w for w, _ in bare)[runs // 2]


def session_report(
    results: list[SessionFootprint], sessions: int, start: tuple[float, float, float]
) -> str:
    """The markdown section on sessions."""
    now, before = results
    start_wall, start_cpu, bare_wall = start
    lines = [
        "",
        "## Agent footprint around a remote session",
        "",
        "Two enrolled agents side by side on one center (`fieldlink server run`, TLS Mosquitto, "
        "loopback): the agent as it is, where each session's SSH stack (asyncssh, websockets, "
        "cryptography's SSH parts) runs in a session process of its own and a spare process "
        "waits 60 s after a session for the next one, and, as the baseline measured in the same "
        "run, the same agent serving sessions in its own process as before. "
        f"{sessions + 1} sessions each, one at a time, each from the API call to a shell prompt "
        "on the terminal socket, then closed. RSS of the agent's process (the lowest over 3 s "
        "when idle), of the session process during the first session, and of the spare.",
        "",
        "| agent | idle | during (agent + session process) | after 1st session | "
        f"after {sessions + 1} (+ spare) | after the spare's linger | after vs idle |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in results:
        during = (
            f"{item.during_agent_mib:.1f} + {item.during_child_mib:.1f}"
            if item.during_child_mib
            else f"{item.during_agent_mib:.1f}"
        )
        last = item.after_linger_mib or item.after_last_mib
        spare = f" (+ {item.spare_mib:.1f})" if item.spare_mib else ""
        linger = f"{item.after_linger_mib:.1f}" if item.after_linger_mib else "n/a"
        lines.append(
            f"| {item.mode} | {item.idle_mib:.1f} | {during} | {item.after_first_mib:.1f} "
            f"| {item.after_last_mib:.1f}{spare} | {linger} | {last - item.idle_mib:+.1f} MiB |"
        )
    lines += [
        "",
        "| click to prompt | first session (cold) | next sessions p50 / p95 |",
        "|---|---|---|",
    ]
    for item in results:
        lines.append(
            f"| {item.mode} | {item.cold_ms:.0f} ms | {pct(item.clicks_ms, 0.5):.0f} / "
            f"{pct(item.clicks_ms, 0.95):.0f} ms |"
        )
    now_last = now.after_linger_mib or now.after_last_mib
    lines += [
        "",
        f"RSS in MiB. Once the spare has gone the agent holds {now_last:.1f} MiB against "
        f"{before.after_last_mib:.1f} MiB when it served the sessions itself "
        f"({now_last / before.after_last_mib:.2f}x); between its first and "
        f"{sessions + 1}th session it moved {now.after_last_mib - now.after_first_mib:+.1f} MiB "
        f"(in process: {before.after_last_mib - before.after_first_mib:+.1f}). What the agent "
        "still holds over its fresh idle footprint is what the first signed command loads to "
        "verify it (`shared.signing.verify_command`: ctypes, to check the signature with the "
        "libcrypto the ssl module has mapped; the command and the session bodies are read "
        "without pydantic, and cryptography is not loaded), which both agents pay and no "
        f"session adds to (heavy modules loaded after: {now.loaded_after or 'none'}). "
        "Starting a session process "
        f"(an interpreter loading asyncssh, websockets and cryptography) took {start_wall:.0f} ms "
        f"here ({start_cpu:.0f} ms of CPU; a bare interpreter {bare_wall:.0f} ms): the first "
        "session after the agent has been idle pays it on the click's path, the next ones take "
        f"the spare. The next sessions are the {sessions} after the first, each {PAUSE_S:.0f} s "
        "after the previous one closed (an operator's pause). Load average at the "
        f"end: {os.getloadavg()[0]:.1f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Measure, print and write bench/results/agent_footprint.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per agent (0: none)")
    args = parser.parse_args()
    around = measure_sessions(args.sessions) if args.sessions else []
    start = session_process_start()
    print(
        f"session process start: {start[0]:.0f} ms wall, {start[1]:.0f} ms CPU (bare {start[2]:.0f} ms)"
    )
    for entry in around:
        print(
            f"{entry.mode:34s} idle {entry.idle_mib:5.1f}  during {entry.during_agent_mib:5.1f}"
            f" + {entry.during_child_mib:5.1f}  after {entry.after_first_mib:5.1f} /"
            f" {entry.after_last_mib:5.1f} (+ spare {entry.spare_mib:.1f}) /"
            f" {entry.after_linger_mib:5.1f} MiB  cold {entry.cold_ms:.0f} ms"
            f"  click p50 {pct(entry.clicks_ms, 0.5):.0f}"
            f" p95 {pct(entry.clicks_ms, 0.95):.0f} ms  loaded {entry.loaded_after}"
        )
    results = measure(args.seconds)
    bare = results[0]
    for item in results:
        print(
            f"{item.name:40s} RSS {item.rss_mib:6.1f} MiB ({item.rss_mib / bare.rss_mib:.2f}x bare)"
            f"  PSS {item.pss_mib:5.1f} MiB"
            f"  CPU {item.cpu_percent:6.3f}% of a core"
            f" ({item.cpu_s:.3f} s vs bare {bare.cpu_s:.3f} s)"
        )
    text = report(results, args.seconds)
    if around:
        text += session_report(around, args.sessions, start)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
