"""`fieldlink demo` (what `make demo` runs): everything comes up, reports, and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from tests.fixtures.processes import DemoProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _get_through_forward(base: str, session_id: str, headers: dict[str, str]) -> bytes:
    url = base.replace("http://", "ws://") + f"/api/v1/sessions/{session_id}/forward/web"
    async with connect(url, additional_headers=headers) as socket:
        assert json.loads(await socket.recv())["state"] == "active"
        await socket.send(b"GET / HTTP/1.0\r\n\r\n")
        page = b""
        async with asyncio.timeout(20):
            while b"</html>" not in page:
                message = await socket.recv()
                assert isinstance(message, bytes)
                page += message
        return page


def test_demo_runs_a_fleet_with_kpis_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    demo = DemoProcess(tmp_path, devices=3)
    log = demo.log_path
    try:
        demo.start("login:    manager", timeout=60)
        text = demo.output()
        url = re.search(r"console:\s+(http://\S+)/", text)
        operator = re.search(r"login:\s+operator / (\S+)", text)
        manager = re.search(r"login:\s+manager / (\S+)", text)
        assert url, text
        assert operator, text
        assert manager, text
        base = url.group(1)

        def token(user: str, password: str) -> str:
            answer = httpx.post(
                f"{base}/api/v1/auth/token", data={"username": user, "password": password}
            )
            answer.raise_for_status()
            return str(answer.json()["access_token"])

        as_operator = {"Authorization": f"Bearer {token('operator', operator.group(1))}"}

        def all_online() -> bool:
            fleet = httpx.get(f"{base}/api/v1/devices", headers=as_operator).json()
            # The 3 simulated devices, and the site gateway with its 2 SNMP printers.
            return fleet["count"] == 6 and all(d["online"] and d["health"] for d in fleet["items"])

        wait_until(all_online, timeout=30, interval=0.5)
        types = {
            d["type"]
            for d in httpx.get(f"{base}/api/v1/devices", headers=as_operator).json()["items"]
        }
        assert types == {"mfp", "imaging", "server"}
        printer = httpx.get(f"{base}/api/v1/devices/demo-printer-1", headers=as_operator).json()
        assert printer["via"] == "demo-gateway"
        assert printer["inventory"]["serial"] == "COLOR-0042"
        assert "JAM" in {fault["code"] for fault in printer["open_faults"]}

        # A simulated device accepts a remote session like a real one.
        opened = httpx.post(
            f"{base}/api/v1/devices/demo-0000/sessions",
            json={"reason": "demo"},
            headers=as_operator,
        )
        assert opened.status_code == 201, opened.text
        session_id = opened.json()["id"]
        ran = httpx.post(
            f"{base}/api/v1/sessions/{session_id}/exec",
            json={"command": "echo $FIELDLINK_SESSION"},
            headers=as_operator,
            timeout=60,
        )
        assert ran.status_code == 200, ran.text
        assert ran.json()["stdout"] == f"{session_id}\n"
        assert b"Device web panel" in asyncio.run(
            _get_through_forward(base, session_id, as_operator)
        )
        closed = httpx.delete(f"{base}/api/v1/sessions/{session_id}", headers=as_operator)
        assert closed.json()["close_reason"] == "operator"

        as_manager = {"Authorization": f"Bearer {token('manager', manager.group(1))}"}
        kpis = httpx.get(
            f"{base}/api/v1/kpis", params={"group_by": "month"}, headers=as_manager
        ).json()
        assert kpis["total"]["incidents_closed"] > 100
        assert len([g for g in kpis["groups"] if g["incidents_closed"]]) >= 11

        config = tmp_path / "demo" / "server.toml"
        kpi = subprocess.run(
            [sys.executable, "-m", "shared", "kpi", "--config", str(config)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert kpi.returncode == 0, kpi.stderr
        assert "total" in kpi.stdout
        children = psutil.Process(demo.pid).children(recursive=True)
        assert any("simulate" in " ".join(c.cmdline()) for c in children)
    finally:
        code = demo.stop(timeout=30)  # SIGINT, then SIGKILL
    assert code == 0, log.read_text()[-2000:]
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []  # the simulator and the embedded broker stopped with it
