"""``fieldlink alerts`` and ``fieldlink knowledge search|add``: the support desk over the API.

Both run against the server saved by ``fieldlink login`` (``fieldlink[client]``
is enough): ``alerts`` lists the fleet's open alerts, most severe first
(``GET /api/v1/alerts`` with its filters); ``knowledge search`` finds articles
and past resolution notes by their words (``GET /api/v1/knowledge``) and
``knowledge add`` writes an article (``POST /api/v1/knowledge/articles``,
managers). Bad input is one ``error:`` line, the API's refusal too.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from server.client.api import ApiClient
from server.client.tables import echo_page
from shared.cli_help import examples, help_text
from shared.cli_language import N_, tr
from shared.errors import InvalidInput

JsonOption = Annotated[bool, typer.Option("--json", help=N_("print the API's JSON answer"))]


class Severity(StrEnum):
    """The alert severities, lowest first."""

    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class Source(StrEnum):
    """Who raised an alert: the device itself, or one of the server's rules."""

    device = "device"
    rule = "rule"


def _short(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(value: Any) -> str:
    return str(value or "-")[:19].replace("T", " ")


@help_text(N_("List the fleet's open alerts, most severe first, then newest."))
def alerts_command(
    severity: Annotated[
        Severity | None, typer.Option("--severity", help=N_("this severity or above"))
    ] = None,
    device_type: Annotated[
        str | None, typer.Option("--type", help=N_("only devices of this type (mfp, imaging...)"))
    ] = None,
    customer: Annotated[str | None, typer.Option(help=N_("only this customer's devices"))] = None,
    code: Annotated[str | None, typer.Option(help=N_("only this fault code"))] = None,
    source: Annotated[Source | None, typer.Option(help=N_("device or rule"))] = None,
    limit: Annotated[int, typer.Option(help=N_("at most this many"), min=1, max=1000)] = 100,
    as_json: JsonOption = False,
) -> None:
    params: dict[str, Any] = {"limit": limit}
    for key, value in (
        ("severity", severity.value if severity else None),
        ("type", device_type),
        ("customer", customer),
        ("code", code),
        ("source", source.value if source else None),
    ):
        if value is not None:
            params[key] = value
    api = ApiClient.from_credentials()
    try:
        page: dict[str, Any] = api.request("GET", "/alerts", params=params)
    finally:
        api.close()
    echo_page(
        page,
        as_json=as_json,
        header=(
            tr("SEVERITY"),
            tr("DEVICE"),
            tr("CUSTOMER"),
            tr("CODE"),
            tr("RAISED"),
            tr("INCIDENT"),
            tr("MESSAGE"),
        ),
        row=lambda a: (
            a["severity"],
            a["device_id"],
            _short(a["customer"], 24),
            a["code"],
            _when(a["raised_at"]),
            str(a["incident_id"]) if a.get("incident_id") is not None else "-",
            _short(a["message"], 50),
        ),
        noun=tr("open alerts"),
    )


knowledge_app = typer.Typer(
    help=N_("Search the knowledge base (articles, past fixes) and write articles."),
    epilog=examples(
        ("fieldlink knowledge search paper jam", "articles and past fixes"),
        ("fieldlink knowledge search SC-541", "by fault code"),
        ('fieldlink knowledge add --title T --steps "…"', "write one"),
    ),
    no_args_is_help=True,
)


@knowledge_app.command("search")
@help_text(N_("Articles and resolution notes containing every word, best first."))
def search_command(
    words: Annotated[list[str], typer.Argument(help=N_("words the hit must contain"))],
    limit: Annotated[int, typer.Option(help=N_("at most this many"), min=1, max=100)] = 20,
    as_json: JsonOption = False,
) -> None:
    query = " ".join(words).strip()
    if not query:
        msg = tr("give the words to search for")
        raise InvalidInput(msg)
    api = ApiClient.from_credentials()
    try:
        page: dict[str, Any] = api.request("GET", "/knowledge", params={"q": query, "limit": limit})
    finally:
        api.close()
    echo_page(
        page,
        as_json=as_json,
        header=(tr("KIND"), tr("ID"), tr("CODES"), tr("TITLE"), tr("SNIPPET")),
        row=lambda h: (
            h["kind"],
            str(h["id"]),
            ",".join(h.get("error_codes") or []) or "-",
            _short(h["title"], 40),
            _short(h["snippet"], 60),
        ),
        noun=tr("hits"),
    )


@knowledge_app.command("add")
@help_text(N_("Write a knowledge-base article (managers)."))
def add_command(
    title: Annotated[str, typer.Option("--title", help=N_("what the article is about"))],
    steps: Annotated[str, typer.Option("--steps", help=N_("the steps that fix it"))],
    code: Annotated[
        list[str] | None, typer.Option("--code", help=N_("a fault code it covers (repeatable)"))
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help=N_("a model it covers (repeatable)"))
    ] = None,
    as_json: JsonOption = False,
) -> None:
    if not title.strip() or not steps.strip():
        msg = tr("--title and --steps must not be empty")
        raise InvalidInput(msg)
    body = {"title": title, "steps": steps, "error_codes": code or [], "models": model or []}
    api = ApiClient.from_credentials()
    try:
        article: dict[str, Any] = api.request("POST", "/knowledge/articles", json=body)
    finally:
        api.close()
    if as_json:
        typer.echo(json.dumps(article, indent=2))
        return
    typer.echo(tr("article %(id)s: %(title)s", id=article["id"], title=article["title"]))
