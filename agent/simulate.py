"""``fieldlink simulate``: a fleet of simulated agents in one process, for demos and load tests.

Each simulated device is a full :class:`~agent.supervisor.Agent` (its own MQTT
connection, birth and last will, ``boot_id`` and ``seq``, outbox) whose health
comes from a simulated profile instead of psutil and SNMP. Their starts, and so
their sampling times, are spread evenly over one interval, so 2,000 devices at
a 10 s interval make a steady 200 samples/s rather than a burst every 10 s.

With ``--command-key`` (the server's command-signing public key, pinned as an
enrolled agent pins it) and ``--host-key-dir``, simulated devices accept
signed commands and remote sessions too. Each has an ed25519 SSH host key,
``DIR/<id>`` and ``DIR/<id>.pub`` (made when missing, so a demo can register
the public halves with the server), and a default site policy: no consent,
no services unless ``--service name=host:port`` names some, and one SFTP
folder, ``<state-dir>/<id>/files``. The pinned key is loaded once for the whole
fleet, and nothing of the session stack is loaded before the first session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import resource
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

import typer

from agent.health.collectors.base import Collector
from agent.health.outbox import MemoryOutbox
from agent.health.profiles import ProfileOptions, SimulatedHost, create_profile
from agent.remote.policy import ServiceTarget, SitePolicy
from agent.supervisor import Agent
from shared.broker_url import BrokerAddress
from shared.cli_help import help_text
from shared.errors import ConfigError
from shared.hostkeys import ensure_host_keys
from shared.ids import check_device_id
from shared.translatable import N_

logger = logging.getLogger(__name__)

FLEET_PROFILES: Final = ("mfp", "imaging", "server")
PROFILE_CHOICES: Final = (*FLEET_PROFILES, "mixed")
#: Sent samples a simulated device keeps for a resend: a fleet of thousands lives in
#: one process, so each keeps fewer than a real agent (a couple of minutes' worth).
SIMULATED_RESEND_MAX_SAMPLES: Final = 120


#: The SFTP folder of each simulated device, under ``<state-dir>/<id>/``.
SFTP_FOLDER: Final = "files"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How simulated devices accept commands and remote sessions.

    Attributes:
        command_key_file: The server's command-signing public key.
        host_key_dir: One SSH host key per device, ``<id>`` and ``<id>.pub``.
        state_dir: Each device's SFTP folder is ``<state_dir>/<id>/files``.
        services: Services every device allows sessions to forward to.
    """

    command_key_file: Path
    host_key_dir: Path
    state_dir: Path
    services: Mapping[str, ServiceTarget] = field(default_factory=dict)

    def policy_for(self, device_id: str) -> SitePolicy:
        """The default site policy of one simulated device."""
        return SitePolicy(
            services=self.services,
            sftp_folders={SFTP_FOLDER: self.state_dir / device_id / SFTP_FOLDER},
        )


def parse_services(values: Sequence[str]) -> dict[str, ServiceTarget]:
    """``["web=127.0.0.1:80", ...]`` as allowlisted services.

    Raises:
        ConfigError: for a value that is not ``name=host:port``.
    """
    services: dict[str, ServiceTarget] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep:
            msg = f"--service: {value!r} is not name=host:port"
            raise ConfigError(msg)
        try:
            services[name.strip()] = ServiceTarget.parse(name.strip(), target.strip())
        except ConfigError as exc:
            msg = f"--service: {exc}"
            raise ConfigError(msg) from None
    return services


def fleet_ids(prefix: str, count: int) -> list[str]:
    """``prefix-0000``, ``prefix-0001``, ... (``count`` ids).

    Raises:
        InvalidDeviceId: when the prefix makes invalid ids.
    """
    return [check_device_id(f"{prefix}-{index:04d}") for index in range(count)]


def profile_of(index: int, profile: str) -> str:
    """The profile of the ``index``-th device: ``profile``, or a rotation when ``mixed``."""
    return FLEET_PROFILES[index % len(FLEET_PROFILES)] if profile == "mixed" else profile


def simulated_agent(
    device_id: str,
    broker_url: str,
    *,
    interval_s: float = 10.0,
    profile: str = "mfp",
    seed: int | None = None,
    start_delay_s: float = 0.0,
    keepalive_s: int = 60,
    outbox_max_samples: int = 1_000,
    reconnect_min_s: float = 1.0,
    reconnect_max_s: float = 30.0,
    sessions: SessionOptions | None = None,
) -> Agent:
    """One simulated device: simulated host and ``profile`` metrics, an in-memory outbox.

    With ``sessions``, it also accepts signed commands and remote sessions.

    Raises:
        ConfigError: for a bad broker URL or an unknown profile.
    """
    try:
        broker = BrokerAddress.parse(broker_url)
    except ValueError as exc:
        msg = f"--broker: {exc}"
        raise ConfigError(msg) from None
    options = ProfileOptions(device_id=device_id, seed=seed)
    collectors: list[Collector] = [
        SimulatedHost(options),
        create_profile(profile, options, simulate=True),
    ]
    agent = Agent(
        device_id,
        broker,
        collectors,
        MemoryOutbox(outbox_max_samples, resend_max_samples=SIMULATED_RESEND_MAX_SAMPLES),
        interval_s=interval_s,
        start_delay_s=start_delay_s,
        keepalive_s=keepalive_s,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
        rng=random.Random(None if seed is None else f"{seed}/{device_id}"),  # noqa: S311
        command_key_file=sessions.command_key_file if sessions else None,
    )
    if sessions is not None:
        # A loopback demo: dial directly, whatever proxy the environment names. The
        # simulated devices share this process's SSH stack (a process per session each
        # would cost hundreds of MiB in a load test).
        agent.enable_sessions(
            sessions.policy_for(device_id),
            host_key_path=sessions.host_key_dir / device_id,
            proxy=None,
            in_process=True,
        )
    return agent


def build_fleet(
    broker_url: str,
    ids: Sequence[str],
    *,
    interval_s: float = 10.0,
    profile: str = "mixed",
    seed: int | None = None,
    ramp_s: float | None = None,
    keepalive_s: int = 60,
    reconnect_min_s: float = 1.0,
    reconnect_max_s: float = 30.0,
    sessions: SessionOptions | None = None,
) -> list[Agent]:
    """The agents of a simulated fleet, their starts spread evenly over ``ramp_s``.

    Args:
        broker_url: ``mqtt://host:port``.
        ids: The device ids.
        interval_s: Seconds between one device's samples.
        profile: ``mfp``, ``imaging``, ``server``, or ``mixed`` (a rotation of the three).
        seed: Makes every device's values repeatable.
        ramp_s: Spread of the starts (one interval by default).
        keepalive_s: MQTT keepalive of every device.
        reconnect_min_s: Floor of the reconnect delay.
        reconnect_max_s: Cap of the reconnect delay.
        sessions: Accept signed commands and remote sessions (host keys must
            exist: :func:`ensure_host_keys`).

    Raises:
        ConfigError: for a bad broker URL or an unknown profile.
    """
    if profile not in PROFILE_CHOICES:
        msg = f"--profile: must be one of {', '.join(PROFILE_CHOICES)}"
        raise ConfigError(msg)
    spread = interval_s if ramp_s is None else ramp_s
    count = max(1, len(ids))
    return [
        simulated_agent(
            device_id,
            broker_url,
            interval_s=interval_s,
            profile=profile_of(index, profile),
            seed=seed,
            start_delay_s=spread * index / count,
            keepalive_s=keepalive_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            sessions=sessions,
        )
        for index, device_id in enumerate(ids)
    ]


async def run_agents(agents: Sequence[Agent]) -> None:
    """Run ``agents`` until cancelled; each then publishes its ``shutdown`` state."""
    _raise_open_files_limit(len(agents))
    async with asyncio.TaskGroup() as group:
        for agent in agents:
            group.create_task(agent.run(), name=f"agent {agent.device_id}")


async def run_fleet(
    broker_url: str,
    ids: Sequence[str],
    interval_s: float = 10.0,
    *,
    profile: str = "mixed",
    seed: int | None = None,
    ramp_s: float | None = None,
    keepalive_s: int = 60,
    reconnect_min_s: float = 1.0,
    reconnect_max_s: float = 30.0,
    sessions: SessionOptions | None = None,
) -> None:
    """Run a simulated fleet until cancelled (then every device publishes ``shutdown``).

    Example:
        ``task = asyncio.create_task(run_fleet("mqtt://127.0.0.1:1883", fleet_ids("demo", 3)))``

    Args: as :func:`build_fleet`.

    Raises:
        ConfigError: for a bad broker URL or an unknown profile.
    """
    agents = build_fleet(
        broker_url,
        ids,
        interval_s=interval_s,
        profile=profile,
        seed=seed,
        ramp_s=ramp_s,
        keepalive_s=keepalive_s,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
        sessions=sessions,
    )
    await run_agents(agents)


def _raise_open_files_limit(connections: int) -> None:
    # One socket per device: lift the soft limit toward the hard one when the fleet needs it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            logger.warning("open-files limit %d is below the %d this fleet needs", new_soft, wanted)


async def _run_until_signal(agents: Sequence[Agent]) -> None:
    fleet = asyncio.create_task(run_agents(agents))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, fleet.cancel)
    try:
        await fleet
    except asyncio.CancelledError:
        # Cancelled by our own signal handler: a clean stop, not an error.
        if not fleet.cancelled():
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@help_text(N_("Run a fleet of simulated agents in one process until Ctrl-C or SIGTERM."))
def simulate_command(
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, help="How many devices.")] = 3,
    prefix: Annotated[str, typer.Option(help="Device ids are PREFIX-0000, PREFIX-0001, ...")] = (
        "sim"
    ),
    broker: Annotated[
        str, typer.Option(help="Broker URL, mqtt://host:port.")
    ] = "mqtt://127.0.0.1:1883",
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between one device's samples.")
    ] = 10.0,
    profile: Annotated[
        str, typer.Option(help="mfp, imaging, server, or mixed (a rotation of the three).")
    ] = "mixed",
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable simulated values.")] = None,
    keepalive: Annotated[int, typer.Option(min=1, help="MQTT keepalive, seconds.")] = 60,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    command_key: Annotated[
        Path | None,
        typer.Option(
            "--command-key",
            help="The server's command-signing public key: accept signed commands and sessions.",
            dir_okay=False,
        ),
    ] = None,
    host_key_dir: Annotated[
        Path | None,
        typer.Option(
            "--host-key-dir",
            help="One SSH host key per device, DIR/<id> and DIR/<id>.pub (made when missing).",
            file_okay=False,
        ),
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            metavar="NAME=HOST:PORT",
            help="A service sessions may forward to, name=host:port (repeatable).",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Each device's SFTP folder is DIR/<id>/files (default: a temporary directory).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    from shared.logs import configure_logging

    configure_logging(log_level)
    ids = fleet_ids(prefix, devices)
    services = parse_services(service or [])
    if (command_key is None) != (host_key_dir is None):
        msg = "--command-key and --host-key-dir go together (sessions need both)"
        raise ConfigError(msg)
    sessions: SessionOptions | None = None
    scratch: Path | None = None
    if command_key is not None and host_key_dir is not None:
        if not command_key.is_file():
            msg = f"--command-key: no such file {command_key}"
            raise ConfigError(msg)
        if state_dir is None:
            state_dir = scratch = Path(tempfile.mkdtemp(prefix="fieldlink-simulate-"))
        made = ensure_host_keys(host_key_dir, ids)
        _make_sftp_folders(state_dir, ids)
        sessions = SessionOptions(command_key, host_key_dir, state_dir, services)
        typer.echo(
            f"sessions on: host keys in {host_key_dir} ({made} new), files under {state_dir}",
            err=True,
        )
    elif services:
        msg = "--service needs --command-key and --host-key-dir (sessions are off without them)"
        raise ConfigError(msg)
    agents = build_fleet(
        broker,
        ids,
        interval_s=interval,
        profile=profile,
        seed=seed,
        keepalive_s=keepalive,
        sessions=sessions,
    )
    typer.echo(
        f"simulating {devices} device(s) {ids[0]}..{ids[-1]} on {broker}, "
        f"a sample every {interval:g} s each; Ctrl-C to stop",
        err=True,
    )
    try:
        asyncio.run(_run_until_signal(agents))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    typer.echo(f"stopped {devices} simulated device(s)", err=True)


def _make_sftp_folders(state_dir: Path, ids: Sequence[str]) -> None:
    try:
        for device_id in ids:
            os.makedirs(state_dir / device_id / SFTP_FOLDER, mode=0o700, exist_ok=True)
    except OSError as exc:
        msg = f"--state-dir: cannot create the devices' folders in {state_dir}: {exc.strerror}"
        raise ConfigError(msg) from exc
