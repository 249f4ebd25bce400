"""``fieldlink agent run``: the agent as a daemon, stopped cleanly by SIGTERM or SIGINT.

:func:`main` is the lean entry point (``python -m agent run``): it imports
neither click, typer nor pydantic, which would cost the resident agent about
8 MB and 23 MB. ``fieldlink agent run`` hands over to it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from agent.config import AgentSettings, load_agent_settings, resolve_config_path
from shared.errors import FieldlinkError

logger = logging.getLogger(__name__)


async def run_agent(settings: AgentSettings) -> None:
    """Run the agent the settings describe until SIGTERM or SIGINT, then stop cleanly.

    Raises:
        ConfigError: when the configuration cannot be used (profile, TLS files, state_dir).
    """
    from agent.supervisor import agent_from_settings

    agent = await agent_from_settings(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    try:
        await agent.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await agent.outbox.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m agent run [--config FILE]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fieldlink agent", description="The fieldlink agent.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent daemon")
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="agent.toml (default: $FIELDLINK_CONFIG, else /etc/fieldlink/agent.toml)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_agent_settings(resolve_config_path(args.config))
        from shared.logs import configure_logging

        configure_logging(settings.log_level)
        asyncio.run(run_agent(settings))
    except FieldlinkError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
