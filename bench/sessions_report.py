"""The Markdown section :mod:`bench.sessions` writes: one table per phase, and the load."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.sessions_throughput import OPENSSH_SCP, OPENSSH_TCP, Rate

# -- statistics -------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load() -> float:
    return os.getloadavg()[0]


@dataclass
class Loads:
    """1-minute load averages at the start and end of each phase."""

    phases: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = _load()
        yield
        self.phases[name] = (start, _load())


# -- the report -------------------------------------------------------------------------


def report(results: dict[str, Any], loads: Loads, args: argparse.Namespace) -> str:
    """The Markdown section of a run (``results`` of each phase that ran)."""
    lines = [
        "## Remote sessions end to end (bench/sessions.py)",
        "",
        "`fieldlink server run` (SQLite, device CA, signed commands) with a TLS Mosquitto and "
        f"{args.agents} enrolled agents (`fieldlink agent run`, consent `none`), all on this "
        "2-core machine over loopback; the operator's side through the public API only. "
        "The baseline is an OpenSSH `ssh -R` reverse tunnel (aes128-gcm, as fieldlink's "
        "tunnel) to a private sshd, measured in the same run to the same targets.",
        "",
    ]
    if "openssh_missing" in results:
        lines += [f"**No OpenSSH baseline in this run**: {results['openssh_missing']}.", ""]
    if "click" in results:
        lines += _click_table(results["click"])
    if "keys" in results:
        lines += _keys_table(results["keys"], args.keystrokes)
    if "rate" in results:
        lines += _rate_table(results["rate"], args.megabytes)
        if not results.get("gateway"):
            lines += [
                "The SSH gateway was not running in this server (not landed yet), so there "
                "is no `scp` row.",
                "",
            ]
    if "many" in results:
        lines += _many_table(results["many"], results.get("many_openssh"))
    lines += ["| phase | load average at start → end (1 min) |", "|---|---|"]
    lines += [f"| {name} | {a:.2f} → {b:.2f} |" for name, (a, b) in loads.phases.items()]
    lines.append("")
    return "\n".join(lines)


def _click_table(click: dict[str, Any]) -> list[str]:
    steps: dict[str, list[float]] = click["steps"]
    prompt = steps["prompt shown"]
    lines = [
        f"### Click to shell ({click['count']} sessions, one after another)",
        "",
        "From `POST /api/v1/devices/{id}/sessions` to a ready shell prompt on the "
        "terminal socket. Each step's time is counted from the click; the agent's and the "
        "server's steps come from their logs (1 ms resolution). Target: p50 < 500 ms, "
        "p95 < 1 s.",
        "",
        "| step (ms after the click) | p50 | p95 | median step |",
        "|---|---|---|---|",
    ]
    previous = 0.0
    for name, values in steps.items():
        if not values:
            lines.append(f"| {name} | - | - | - |")
            continue
        p50 = statistics.median(values)
        lines.append(f"| {name} | {p50:.0f} | {pct(values, 0.95):.0f} | +{p50 - previous:.0f} |")
        previous = p50
    lines += [
        "",
        f"Click to prompt: **p50 {statistics.median(prompt):.0f} ms, p95 "
        f"{pct(prompt, 0.95):.0f} ms**; the first session after the agent started (not "
        f"counted: the agent imports its session stack then) took {click['cold_ms']:.0f} ms.",
        "",
    ]
    return lines


def _keys_table(keys: dict[str, list[float]], count: int) -> list[str]:
    lines = [
        f"### Keystroke round trip ({count} keystrokes per path)",
        "",
        "One byte typed into an interactive login shell (bash, readline echoing) until its "
        "echo is back, 10 ms between keystrokes. *Added* is the path's p50 minus the local "
        "PTY's (what the tunnel adds).",
        "",
        "| path | p50 (µs) | p99 (µs) | added p50 (µs) | p50 ratio to OpenSSH | p99 ratio |",
        "|---|---|---|---|---|---|",
    ]
    floor_key = next((k for k in keys if k.startswith("local")), None)
    base_key = next((k for k in keys if k.startswith("OpenSSH")), None)
    floor = statistics.median(keys[floor_key]) if floor_key else 0.0
    base50 = statistics.median(keys[base_key]) if base_key else None
    base99 = pct(keys[base_key], 0.99) if base_key else None
    for name, values in keys.items():
        p50, p99 = statistics.median(values), pct(values, 0.99)
        added = "-" if name == floor_key else f"{(p50 - floor) * 1e6:.0f}"
        r50 = f"{p50 / base50:.2f}" if base50 and name != floor_key else "-"
        r99 = f"{p99 / base99:.2f}" if base99 and name != floor_key else "-"
        lines.append(f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {added} | {r50} | {r99} |")
    lines.append("")
    return lines


def _tunnel_cpu(rate: Rate) -> float:
    """CPU seconds of the tunnel's own processes (not the bench's client, the same work)."""
    return sum(seconds for who, seconds in rate.cpu.items() if who != "bench (client)")


def _rate_table(rates: dict[str, Rate], megabytes: int) -> list[str]:
    lines = [
        f"### Throughput ({megabytes} MiB each way, median of 3)",
        "",
        "Random bytes pushed to a Python byte sink behind the agent's `sink` service "
        "(length-prefixed: it answers with the count), and pulled from it; `scp` copies a "
        "file into the device's SFTP folder and back. Ratios are to the OpenSSH row above "
        "them, measured in the same run. Target: ≥ 0.5. CPU is per GiB uploaded; *tunnel CPU* "
        "adds up the processes between the client and the sink (server, agent and `fieldlink "
        "connect`; sshd and the `ssh -R` client), as a ratio to OpenSSH's.",
        "",
        "| path | upload MB/s | ratio | download MB/s | ratio | CPU s per GiB up, by process "
        "| tunnel CPU per GiB up, ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    tcp, scp = rates.get(OPENSSH_TCP), rates.get(OPENSSH_SCP)
    for name, rate in rates.items():
        reference = scp if "scp" in name else tcp
        up, down = statistics.median(rate.up), statistics.median(rate.down)
        ratio_up = f"{up / statistics.median(reference.up):.2f}" if reference else "-"
        ratio_down = f"{down / statistics.median(reference.down):.2f}" if reference else "-"
        gib = len(rate.up) * megabytes / 1024
        cpu = ", ".join(
            f"{who} {seconds / gib:.1f}"
            for who, seconds in sorted(rate.cpu.items(), key=lambda kv: -kv[1])
            if seconds / gib >= 0.05
        )
        spent = _tunnel_cpu(rate) / gib
        reference_cpu = (
            _tunnel_cpu(reference) / (len(reference.up) * megabytes / 1024) if reference else 0
        )
        cpu_ratio = f"{spent / reference_cpu:.2f}" if reference_cpu and spent else "-"
        lines.append(
            f"| {name} | {up:.0f} | {ratio_up} | {down:.0f} | {ratio_down} | {cpu or '-'} "
            f"| {cpu_ratio} |"
        )
    lines.append("")
    return lines


def _many_table(many: dict[str, Any], openssh: dict[str, Any] | None) -> list[str]:
    count, opened = many["count"], many["opened"]
    ready = many["ready_ms"]
    (s_rss0, s_pss0), (s_rss1, s_pss1) = many["before"]["server"], many["after"]["server"]
    (a_rss0, a_pss0), (a_rss1, a_pss1) = many["before"]["agents"], many["after"]["agents"]
    sh_rss, sh_pss, sh_count = many["shells"]
    lines = [
        f"### {count} sessions at once on one server",
        "",
        f"{count} sessions open together on one server, spread over {many['agents']} agents "
        f"(at most {many['at_once']} being opened at any moment), each with a terminal socket "
        "at a prompt; then a command run in every one, then all closed. Memory is measured "
        "with all of them open, against the same processes after one session each (the "
        "agent loads its session stack with its first session, once).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| sessions at a prompt | {opened} of {count} |",
        f"| failures (open, command or close) | {len(many['failures'])} |",
        f"| all {count} at a prompt after | {many['all_ready_s']:.1f} s |",
    ]
    if ready:
        lines.append(
            f"| click to prompt meanwhile, p50 / p95 | {statistics.median(ready):.0f} / "
            f"{pct(ready, 0.95):.0f} ms |"
        )
    per = max(opened, 1)
    lines += [
        f"| server: RSS {s_rss0:.0f} → {s_rss1:.0f} MiB | **{(s_rss1 - s_rss0) * 1024 / per:.0f} "
        f"KiB per session** (PSS {(s_pss1 - s_pss0) * 1024 / per:.0f}) |",
        f"| agents (all): RSS {a_rss0:.0f} → {a_rss1:.0f} MiB | **{(a_rss1 - a_rss0) * 1024 / per:.0f} "
        f"KiB per session** (PSS {(a_pss1 - a_pss0) * 1024 / per:.0f}) |",
        f"| the shells themselves ({sh_count} processes) | {sh_rss * 1024 / per:.0f} KiB RSS, "
        f"{sh_pss * 1024 / per:.0f} KiB PSS per session |",
    ]
    if openssh is not None:
        (o_rss0, o_pss0), (o_rss1, o_pss1) = openssh["before"], openssh["after"]
        lines.append(
            f"| OpenSSH baseline: sshd for {count} `ssh -tt` logins through the tunnel "
            f"({openssh['failures']} failed) | {(o_rss1 - o_rss0) * 1024 / count:.0f} KiB RSS, "
            f"{(o_pss1 - o_pss0) * 1024 / count:.0f} KiB PSS per login |"
        )
        ours = (s_pss1 - s_pss0) / per + (a_pss1 - a_pss0) / per
        if o_pss1 > o_pss0:
            lines.append(
                f"| fieldlink (server + agent) per session as a ratio to OpenSSH per login, "
                f"PSS | {ours / ((o_pss1 - o_pss0) / count):.2f} |"
            )
    lines.append("")
    if many["failures"]:
        lines += ["Failures:", "", *(f"- {f}" for f in many["failures"][:10]), ""]
    return lines
