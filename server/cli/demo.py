"""``fieldlink demo``: everything on embedded defaults, as ``make demo``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from server.demo import free_port, port_free, run_demo
from shared.cli_help import help_text
from shared.translatable import N_


@help_text(N_("Run everything on embedded defaults: server, embedded broker, simulated devices."))
def demo_command(
    devices: Annotated[
        int, typer.Option("--devices", "-n", min=1, max=5000, help="simulated devices")
    ] = 3,
    directory: Annotated[Path, typer.Option("--dir", help="where the demo keeps its data")] = Path(
        "fieldlink-demo"
    ),
    port: Annotated[
        int, typer.Option(help="HTTP port (0 or a taken 8080 picks a free one)")
    ] = 8080,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 5.0,
) -> None:
    from shared.logs import configure_logging

    configure_logging("warning")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if port == 0 or not port_free(port):
        port = free_port()
    asyncio.run(run_demo(directory, devices, port, interval))
