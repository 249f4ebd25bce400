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
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

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


def main() -> None:
    """Measure, print and write bench/results/agent_footprint.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
