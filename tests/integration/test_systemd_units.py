"""The shipped systemd units: hardening kept (``systemd-analyze security``), units that parse,
and a shell helper that imposes nothing on the maintenance shells it starts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _exposure(unit: str) -> float:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(UNITS / unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze cannot score units offline: {done.stderr.strip()[:200]}")
    return float(found.group(1))


@needs_analyze
@pytest.mark.parametrize(("unit", "ceiling"), [
    ("fieldlink-agent.service", 1.6), ("fieldlink-server.service", 1.5),
])  # fmt: skip
def test_the_sandboxed_units_keep_their_exposure(unit: str, ceiling: float) -> None:
    assert _exposure(unit) <= ceiling


@needs_analyze
def test_every_unit_parses() -> None:
    assert ANALYZE is not None
    units = sorted(str(path) for path in UNITS.glob("fieldlink-*.*"))
    done = subprocess.run(
        [ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    # The install location of the package is the only thing this machine lacks.
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "/opt/fieldlink/bin/fieldlink is not executable" not in line
    ]
    assert problems == []


def _directives(unit: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_the_agent_keeps_its_identity_in_its_state_directory() -> None:
    agent = _directives("fieldlink-agent.service")
    assert agent["User"] == "fieldlink-agent"
    assert agent["StateDirectory"] == "fieldlink-agent"
    assert agent["ProtectSystem"] == "strict"
    assert "fieldlink-agent-shell.socket" in agent["Wants"]


def test_the_helper_socket_admits_the_agents_group_only() -> None:
    socket = _directives("fieldlink-agent-shell.socket")
    assert socket["ListenStream"] == "/run/fieldlink-agent-shell.sock"
    assert (socket["SocketUser"], socket["SocketGroup"]) == ("root", "fieldlink-agent")
    assert socket["SocketMode"] == "0660"
    assert socket["Accept"] == "no"


def test_the_helper_imposes_no_sandbox_on_the_shells() -> None:
    helper = _directives("fieldlink-agent-shell.service")
    assert "shell-helper" in helper["ExecStart"]
    assert "--agent-user fieldlink-agent" in helper["ExecStart"]
    inherited = {
        "User", "NoNewPrivileges", "ProtectProc", "ProtectSystem", "ProtectHome", "PrivateTmp",
        "PrivateDevices", "MemoryMax", "TasksMax", "CPUQuota", "RestrictAddressFamilies",
        "SystemCallFilter", "CapabilityBoundingSet", "UMask", "RestrictSUIDSGID",
    }  # fmt: skip
    assert inherited.isdisjoint(helper)
    assert helper["KillMode"] == "control-group"
    # Each session in a cgroup of its own, under the helper's delegated one.
    assert "--session-cgroups" in helper["ExecStart"]
    assert helper["Delegate"] == "yes"
