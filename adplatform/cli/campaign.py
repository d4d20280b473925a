"""``adplatform campaign list|show|create|update|stop`` and ``adplatform explain``: clients of the admin
service's ``/v1`` API (tables for people, ``--json`` for scripts). Validation is the API's (the Ad
Manager's own rules): the CLI only builds the body and shows the answer."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from adplatform.cli.client import admin_errors, client_options, emit_json, make_client, print_table

F = TypeVar("F", bound=Callable[..., Any])

_WAIT_HELP = (
    "Answer only once the change is in PostgreSQL and in every ad server's index (the API's ?wait=true); "
    "without it the command returns as soon as the instruction is published."
)


@click.group("campaign")
def campaign() -> None:
    """Campaigns through the admin service (ADP_ADMIN_URL, ADP_API_KEY): list, show, create, update, stop."""


@campaign.command("list")
@click.option("--status", type=click.Choice(["Active", "Inactive"]), help="Only campaigns in this status.")
@click.option("--category", metavar="NAME", help="Only campaigns of this category (exact).")
@click.option("--q", "q", metavar="TEXT", help="Text search in id, text, keywords and category.")
@click.option(
    "--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Campaigns per page."
)
@click.option("--cursor", metavar="ID", help="Start after this campaign id (a page's next_cursor).")
@click.option("--all", "all_pages", is_flag=True, help="Follow next_cursor through every page.")
@client_options
def list_cmd(
    status: str | None, category: str | None, q: str | None, limit: int, cursor: str | None,
    all_pages: bool, admin_url: str | None, api_key: str | None, as_json: bool,
) -> None:  # fmt: skip
    """List campaigns by id, a page at a time (--all for every page)."""
    client = make_client(admin_url, api_key)
    items: list[dict[str, Any]] = []
    with admin_errors(client):
        while True:
            page = client.list_campaigns(status=status, category=category, q=q, cursor=cursor, limit=limit)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not all_pages or cursor is None:
                break
    if as_json:
        emit_json({"items": items, "next_cursor": cursor})
        return
    rows = [
        (c["campaign_id"], c["status"], c["category"], c["cpc"], c["cpa"], c["budget"],
         f"{c['flight_start']} → {c['flight_end']}", c["text"][:40])
        for c in items
    ]  # fmt: skip
    columns = ("ID", "STATUS", "CATEGORY", "CPC", "CPA", "BUDGET", "FLIGHT (UTC)", "TEXT")
    print_table(None, columns, rows)
    more = f"; more after {cursor} (--cursor {cursor}, or --all)" if cursor else ""
    click.echo(f"{len(items)} campaigns{more}", err=True)


def _pairs(section: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in section.items():
        if isinstance(value, dict):
            out.extend(_pairs(value, f"{prefix}{key}."))
        else:
            out.append((prefix + key, value))
    return out


@campaign.command("show")
@click.argument("campaign_id")
@client_options
def show_cmd(campaign_id: str, admin_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Show a campaign: its stored fields, live money, pacing, delivery and last change."""
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        detail = client.show_campaign(campaign_id)
    if as_json:
        emit_json(detail)
        return
    print_table(f"campaign {campaign_id}", ("FIELD", "VALUE"), _pairs(detail["campaign"]))
    live = [
        ("pacing", detail["pacing"]),
        *_pairs(detail["money"], "money."),
        *_pairs(detail["delivery"], "delivery."),
        *_pairs(detail["last_change"], "last_change."),
    ]
    print_table("live", ("FIELD", "VALUE"), live)


def _read_file(path: str) -> dict[str, Any]:
    """A campaign from a JSON object (``-``: standard input) or a CSV file of one row (``action`` ignored)."""
    try:
        if path != "-" and Path(path).suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
            if len(rows) != 1:
                raise click.BadParameter(f"{path} has {len(rows)} rows; expected one", param_hint="--file")
            return {k: v for k, v in rows[0].items() if k is not None and k != "action"}
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--file") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}", param_hint="--file") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{path}: expected a JSON object of fields", param_hint="--file")
    return value


def _body(file: str | None, fields: tuple[str, ...]) -> dict[str, Any]:
    body = _read_file(file) if file else {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--field")
        body[name.strip()] = value
    return body


def _file_option(verb: str) -> Callable[[F], F]:
    return click.option(
        "--file", "file", metavar="PATH",
        help=f"The fields to {verb}: a JSON object (- reads standard input) or a CSV file of one row in the "
        "campaign CSV's format (its action column is ignored).",
    )  # fmt: skip


def _field_option(verb: str) -> Callable[[F], F]:
    return click.option(
        "--field", "fields", multiple=True, metavar="NAME=VALUE",
        help=f"A field to {verb}, as in the campaign CSV (e.g. cpc=0.0020); repeat it; wins over --file.",
    )  # fmt: skip


def _written(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(answer)
        return
    cid = answer["campaign_id"]
    if not answer["published"]:
        click.echo(f"{cid}: already stopped; nothing published")
        return
    where = f"partition {answer['partition']} offset {answer['offset']}, version {answer['version']}"
    head = f"{cid}: {answer['action']} by {answer['author']} published ({where})"
    if answer["applied"]:
        click.echo(f"{head}; applied in PostgreSQL and the ad servers in {answer['wait_ms']:.0f} ms")
    else:
        click.echo(f"{head}; not waited for (--wait waits until it is applied)")


@campaign.command("create")
@_file_option("create")
@_field_option("set")
@click.option("--wait", is_flag=True, help=_WAIT_HELP)
@client_options
def create_cmd(
    file: str | None, fields: tuple[str, ...], wait: bool, admin_url: str | None, api_key: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Create a campaign: every campaign CSV column but action (and optionally frequency_cap)."""
    body = _body(file, fields)
    if not body:
        raise click.UsageError("nothing to create: give --file and/or --field NAME=VALUE")
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        answer = client.create_campaign(body, wait=wait)
    _written(answer, as_json)


@campaign.command("update")
@click.argument("campaign_id")
@_file_option("change")
@_field_option("change")
@click.option("--wait", is_flag=True, help=_WAIT_HELP)
@client_options
def update_cmd(
    campaign_id: str, file: str | None, fields: tuple[str, ...], wait: bool, admin_url: str | None,
    api_key: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Change some fields of a campaign; the others keep their values (re-activates a stopped one)."""
    body = _body(file, fields)
    if body.get("campaign_id") == campaign_id:  # a whole campaign file: its id is the argument's
        del body["campaign_id"]
    if not body:
        raise click.UsageError("nothing to update: give --field NAME=VALUE and/or --file")
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        answer = client.update_campaign(campaign_id, body, wait=wait)
    _written(answer, as_json)


@campaign.command("stop")
@click.argument("campaign_id")
@click.option("--wait", is_flag=True, help=_WAIT_HELP)
@client_options
def stop_cmd(campaign_id: str, wait: bool, admin_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Stop a campaign (a stopped one stays as it is: nothing is published twice)."""
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        answer = client.stop_campaign(campaign_id, wait=wait)
    _written(answer, as_json)


@click.command("explain")
@click.option("--user-id", metavar="ID", help="A user whose stored profile fills what the query omits.")
@click.option("--device-type", metavar="TYPE", help="e.g. iPhone, Android Mobile, Windows Computer.")
@click.option("--city", metavar="CITY", help="The request's city (implies its state and country).")
@click.option("--state", metavar="STATE", help="The request's state.")
@click.option("--country", metavar="COUNTRY", help="The request's country (default: ADP_DEFAULT_COUNTRY).")
@click.option("--age", type=click.IntRange(0, 150), help="The user's age.")
@click.option("--gender", metavar="M|F", help="The user's gender.")
@click.option("--income-bucket", metavar="L|M|H", help="The user's income bucket.")
@click.option("--limit", type=click.IntRange(1), default=30, show_default=True, help="Verdict rows shown.")
@client_options
def explain_cmd(
    user_id: str | None, device_type: str | None, city: str | None, state: str | None, country: str | None,
    age: int | None, gender: str | None, income_bucket: str | None, limit: int, admin_url: str | None,
    api_key: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Explain a hypothetical ad request: every campaign's verdict, the winner and the clearing price, from
    the ad server's own index and auction code (the admin service's /v1/explain)."""
    from adplatform.admin_client import AdminApiError

    params = {
        "user_id": user_id, "device_type": device_type, "city": city, "state": state, "country": country,
        "age": None if age is None else str(age), "gender": gender, "income_bucket": income_bucket,
    }  # fmt: skip
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        try:
            result = client.explain(params)
        except AdminApiError as exc:
            if exc.status == 404:  # the route itself is missing: an admin service without explain
                raise click.ClickException(
                    f"the admin service at {client.address} has no /v1/explain: update and restart it"
                ) from None
            raise
    if as_json:
        emit_json(result)
        return
    _print_explain(result, limit)


def _print_explain(result: dict[str, Any], limit: int) -> None:
    req = result["request"]
    shown = ", ".join(f"{k}={v}" for k, v in req.items() if v is not None)
    click.echo(f"request: {shown}")
    clearing = result.get("clearing") or {}
    click.echo(
        f"winner: {result['winner'] or '-'}  runner-up: {result['runner_up'] or '-'}  "
        f"clearing cpm: {clearing.get('auction_cpm', '-')}  tied: {', '.join(result['tied']) or '-'}  "
        f"reserve cpm: {result['reserve_cpm']}  campaigns: {result['campaigns']}"
    )
    verdicts = result["verdicts"]
    rows = [(v["campaign_id"], v["verdict"], v["reason"], v["bid"], v["detail"]) for v in verdicts[:limit]]
    print_table(None, ("CAMPAIGN", "VERDICT", "REASON", "BID (CPM)", "DETAIL"), rows)
    if len(verdicts) > limit:
        click.echo(f"{len(verdicts) - limit} more verdicts (--limit, or --json for all)", err=True)


COMMANDS: tuple[click.Command, ...] = (campaign, explain_cmd)
