"""Latency phases of :mod:`bench.sessions`: click to shell, and the keystroke round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._openssh import OpenSSHTunnel
from bench.sessions_setup import Bench, device_home, gateway_options, log_times, login_shell_command
from bench.sessions_shells import Click, LocalPtyShell, click_to_shell, keystrokes, ssh_shell

# -- click to shell ---------------------------------------------------------------------


def _pieces(clicks: list[Click], server_log: Path, agent_log: Path) -> dict[str, list[float]]:
    """Milliseconds from the click to each step, per session (log times have 1 ms steps)."""
    ssh_ready: dict[str, float] = {}
    for when, entry in log_times(server_log):
        if entry["msg"].startswith("agent connected for session "):
            ssh_ready[entry["msg"].rsplit(" ", 1)[1]] = when
    dialed: dict[str, float] = {}
    got_open: list[float] = []
    for when, entry in log_times(agent_log):
        if entry["msg"].startswith("tunnel open to ") and "session_id" in entry:
            dialed[entry["session_id"]] = when
        elif entry["msg"].endswith("running session.open"):
            got_open.append(when)
    steps: dict[str, list[float]] = {
        "API answered": [], "agent received session.open": [], "agent's tunnel dialed": [],
        "SSH ready on the server": [], "shell channel open": [], "prompt shown": [],
    }  # fmt: skip
    for click in clicks:
        ms: dict[str, float | None] = {
            "API answered": click.answered,
            "agent received session.open": next(
                (t for t in got_open if click.clicked - 0.002 <= t <= click.prompt), None
            ),
            "agent's tunnel dialed": dialed.get(click.session_id),
            "SSH ready on the server": ssh_ready.get(click.session_id),
            "shell channel open": click.active or None,
            "prompt shown": click.prompt,
        }
        for name, at in ms.items():
            if at is not None:
                steps[name].append((at - click.clicked) * 1000)
    return steps


async def click_phase(bench: Bench, device_id: str, count: int, agent_log: Path) -> dict[str, Any]:
    """``count`` sessions one after another (after one cold one), each to a prompt and closed."""
    cold: Click | None = None
    clicks: list[Click] = []
    for index in range(count + 1):
        click, shell = await click_to_shell(bench, device_id)
        await shell.close()
        await bench.close_session(click.session_id)
        if index == 0:
            cold = click
        else:
            clicks.append(click)
    assert cold is not None
    steps = _pieces(clicks, bench.server.log_path, agent_log)
    return {"cold_ms": (cold.prompt - cold.clicked) * 1000, "steps": steps, "count": count}


# -- keystrokes -------------------------------------------------------------------------


async def keystroke_phase(
    bench: Bench, device_id: str, tunnel: OpenSSHTunnel | None, count: int
) -> dict[str, list[float]]:
    """Keystroke round trips through each path, one path after another."""
    results: dict[str, list[float]] = {}

    local = LocalPtyShell(device_home(bench.workdir))
    await local.start()
    try:
        await local.until_prompt()
        results["local PTY, no tunnel (floor)"] = await keystrokes(local, count)
    finally:
        await local.close()

    if tunnel is not None:
        shell = await ssh_shell(
            tunnel.login_command(tunnel.ports["sshd"], *login_shell_command(bench.workdir))
        )
        try:
            await shell.until_prompt()
            results["OpenSSH: `ssh -tt` through the `ssh -R` tunnel (baseline)"] = await keystrokes(
                shell, count
            )
        finally:
            await shell.close()

    click, terminal = await click_to_shell(bench, device_id)
    try:
        results["fieldlink: browser-terminal socket"] = await keystrokes(terminal, count)
    finally:
        await terminal.close()
        await bench.close_session(click.session_id)

    if bench.gateway_port is not None:
        shell = await ssh_shell(["ssh", "-tt", *gateway_options(bench), f"{device_id}@127.0.0.1"])
        try:
            await shell.until_prompt(60)
            results["fieldlink: `ssh -tt` through the SSH gateway"] = await keystrokes(shell, count)
        finally:
            await shell.close()
    return results
