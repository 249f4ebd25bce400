"""``fieldlink server notify rules|test RULE``: the notification rules, and one test
message sent at once, on the server named by ``--config``.

``test`` delivers directly (not through the outbox) and says what happened in one
line per channel, so a new rule can be tried before anything happens on the fleet;
it is audited (``notify.test``, actor ``cli``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import httpx2 as httpx
import typer
from sqlmodel import Session

from server.cli.common import ConfigOption, open_database
from shared.cli_language import N_, tr

notify_app = typer.Typer(
    help=N_("Notification rules: list them, send a test."), no_args_is_help=True
)


@notify_app.command("rules")
def list_rules(config: ConfigOption = None) -> None:
    """Every rule in force: name, origin, events, conditions, channels (URLs masked)."""
    from server.notify import store

    settings, engine = open_database(config)
    try:
        with Session(engine) as db:
            rules = store.list_rules(db, settings)
    finally:
        engine.dispose()
    for shown in rules:
        rule = shown.rule
        conditions = [
            f"{key}={','.join(map(str, rule[key]))}"
            for key in ("device_types", "customers", "codes")
            if rule.get(key)
        ]
        channels = ([rule["webhook_url"]] if rule.get("webhook_url") else []) + list(
            rule.get("email_to") or []
        )
        # The language of its e-mails, when not English.
        language = rule.get("language", "en") if rule.get("email_to") else "en"
        typer.echo(
            f"{shown.name}  ({shown.origin})  events={','.join(rule.get('events') or [])}  "
            f"severity>={rule.get('severity')}  {' '.join(conditions) or 'any device'}  "
            f"-> {', '.join(channels) or '-'}"
            + ("" if language == "en" else f"  language={language}")
            + ("" if rule.get("enabled", True) else "  [disabled]")
        )
    if not rules:
        typer.echo(tr("no notification rules ([[server.notify]] in server.toml, or the API)"))


@notify_app.command("test")
def send_test(
    rule_name: Annotated[str, typer.Argument(metavar="RULE", help="the rule's name")],
    config: ConfigOption = None,
) -> None:
    """Send a test message to each of RULE's channels now; exit 1 if one failed."""
    from server import audit
    from server.notify.delivery import DeliveryError, post_webhook, send_email
    from server.notify.planner import payload
    from server.notify.rules import DeviceFacts
    from server.notify.store import all_rules
    from shared.errors import ConfigError, NotFound
    from shared.ids import utcnow

    settings, engine = open_database(config)
    try:
        rule = next((r for r in all_rules(engine, settings) if r.name == rule_name), None)
        if rule is None:
            msg = tr("no notify rule %(rule)r (see: fieldlink server notify rules)", rule=rule_name)
            raise NotFound(msg)
        with Session(engine) as db:
            audit.record(db, actor="cli", action="notify.test", target=f"notify_rule:{rule.name}")
            db.commit()
    finally:
        engine.dispose()
    event: dict[str, Any] = {
        "kind": "test",
        "state": "event",
        "subject": "test",
        "severity": None,
        "message": f"a test of notify rule {rule.name!r} from fieldlink server notify test",
        "at": utcnow(),
        "body": {"actor": "fieldlink server notify test"},
    }
    message = payload(rule, event, DeviceFacts(id="-", type="-", customer="-"))

    async def send() -> list[str]:
        failures: list[str] = []
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            for channel in rule.channels():
                try:
                    if channel == "webhook":
                        await post_webhook(
                            rule, message, 0, time.time(), client, settings.webhook_policy()
                        )
                    else:
                        await send_email(rule, message, settings.smtp)
                except (DeliveryError, ConfigError) as exc:
                    failures.append(channel)
                    typer.echo(
                        tr("%(channel)s: failed: %(error)s", channel=channel, error=exc), err=True
                    )
                else:
                    typer.echo(tr("%(channel)s: sent", channel=channel))
        return failures

    if asyncio.run(send()):
        raise typer.Exit(1)
