"""Fleet benchmark: 2,000 simulated agents at a 10 s interval against one server.

Measures, in one run on this machine:
- the server process's CPU share (fraction of one core) idle and under the fleet's load;
- p50/p95 of ``GET /api/v1/devices`` (the desk's fleet page, 100 rows) and of a
  search (``q=``) idle and under load, and the ratios load/idle.

Target (issue 2): p95 of ``GET /api/v1/devices`` under load < 100 ms.
Run: ``python -m bench.fleet [--devices 2000] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import psutil

from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import ServerProcess, SimulatorProcess, wait_until

RESULTS = Path(__file__).parent / "results" / "fleet.md"


def _latencies(
    client: httpx.Client, path: str, params: dict[str, str], seconds: float
) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.05)
    return samples


def _p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def _cpu_share(process: psutil.Process, seconds: float) -> float:
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch, MosquittoBroker() as broker:
        directory = Path(scratch)
        server = ServerProcess(directory, f"sqlite:///{directory / 'fleet.db'}", broker.url)
        with server:
            assert server.process is not None
            server_ps = psutil.Process(server.process.pid)
            ids = [f"fleet-{i:04d}" for i in range(args.devices)]
            types = ("mfp", "imaging", "server")
            with httpx.Client(
                base_url=f"{server.url}/api/v1",
                headers={"Authorization": f"Bearer {server.token}"},
                timeout=30,
            ) as client:
                for index, device_id in enumerate(ids):
                    client.post(
                        "/devices",
                        json={
                            "id": device_id,
                            "serial": f"SN{index:06d}",
                            "model": "bench",
                            "type": types[index % 3],
                            "customer": f"Customer {index % 150}",
                            "site": f"Site {index % 400}",
                            "contact_phone": f"+1 555 {index:07d}",
                        },
                    ).raise_for_status()
                idle_cpu = _cpu_share(server_ps, 10)
                idle_list = _latencies(client, "/devices", {"limit": "100"}, 10)
                idle_search = _latencies(client, "/devices", {"q": "555 00012"}, 10)

                simulator = SimulatorProcess(
                    directory, broker.url, args.devices, "fleet", interval=args.interval
                )
                simulator.start()
                try:
                    wait_until(
                        lambda: (
                            client.get("/devices", params={"online": "true", "limit": "1"}).json()[
                                "count"
                            ]
                            >= args.devices
                        ),
                        timeout=120,
                        interval=1,
                    )
                    time.sleep(args.interval)  # every device has sent at least one sample
                    load_cpu = _cpu_share(server_ps, args.seconds / 2)
                    load_list = _latencies(client, "/devices", {"limit": "100"}, args.seconds / 4)
                    load_search = _latencies(
                        client, "/devices", {"q": "555 00012"}, args.seconds / 4
                    )
                    received = sum(
                        client.get(f"/devices/{d}").json()["telemetry_stats"]["received"]
                        for d in ids[:50]
                    )
                finally:
                    simulator.stop()

    rate = args.devices / args.interval
    rows = [
        ("server CPU share, idle (cores)", f"{idle_cpu:.3f}", ""),
        (f"server CPU share, {args.devices} agents (cores)", f"{load_cpu:.3f}", f"{load_cpu / max(idle_cpu, 1e-3):.1f}x idle"),
        ("GET /devices p50 idle / load (ms)", f"{_p(idle_list, 50):.1f} / {_p(load_list, 50):.1f}", ""),
        ("GET /devices p95 idle / load (ms)", f"{_p(idle_list, 95):.1f} / {_p(load_list, 95):.1f}", f"{_p(load_list, 95) / _p(idle_list, 95):.2f}x idle"),
        ("search p95 idle / load (ms)", f"{_p(idle_search, 95):.1f} / {_p(load_search, 95):.1f}", f"{_p(load_search, 95) / _p(idle_search, 95):.2f}x idle"),
    ]  # fmt: skip
    lines = [
        "## Fleet: one server under simulated agents",
        "",
        f"{args.devices} simulated agents (one `fieldlink simulate` process) at a {args.interval:g} s "
        f"interval (~{rate:.0f} samples/s) against one `fieldlink server run` on SQLite and a real "
        f"Mosquitto, all on this 2-core machine. Target: p95 of `GET /api/v1/devices` < 100 ms.",
        f"Samples stored for the first 50 devices during the run: {received}.",
        "",
        "| figure | value | ratio |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
