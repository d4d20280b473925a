"""``adplatform dlq list`` and ``adplatform dlq replay``: the dead-letter queue through the admin service
(with each entry's replay, and the replay itself, which needs the write role). ``dlq show`` (in
``adplatform.cli.ingest``) reads the topic directly and needs no admin service."""

from __future__ import annotations

import datetime as dt

import click

from adplatform.cli.client import admin_errors, client_options, emit_json, make_client, print_table


@click.command("list")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="The newest this many entries.",
)
@client_options
def dlq_list(limit: int, admin_url: str | None, api_key: str | None, as_json: bool) -> None:
    """List rejected instructions (oldest first) with their reasons and replays, from the admin service."""
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        page = client.list_dlq(limit=limit)
    if as_json:
        emit_json(page)
        return
    rows = []
    for e in page["items"]:
        at = dt.datetime.fromtimestamp(e["timestamp_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        replay = e.get("replay")
        replayed = f"{replay['partition']}/{replay['offset']} by {replay['author']}" if replay else None
        rows.append((e["partition"], e["offset"], e["key"], e["reason"], e["source"], at, replayed))
    print_table(None, ("P", "OFFSET", "KEY", "REASON", "SOURCE", "AT (UTC)", "REPLAYED TO"), rows)
    click.echo(f"{len(rows)} entries", err=True)


@click.command("replay")
@click.argument("partition", type=click.IntRange(0))
@click.argument("offset", type=click.IntRange(0))
@client_options
def dlq_replay(
    partition: int, offset: int, admin_url: str | None, api_key: str | None, as_json: bool
) -> None:
    """Publish the DLQ record at PARTITION OFFSET to campaign-instructions again, after a fix; a record is
    replayed once (a second replay publishes nothing and names the first)."""
    client = make_client(admin_url, api_key)
    with admin_errors(client):
        answer = client.replay_dlq(partition, offset)
    if as_json:
        emit_json(answer)
        return
    where = f"partition {answer['partition']} offset {answer['offset']}"
    if answer["replayed_before"]:
        click.echo(f"DLQ {partition}/{offset} was replayed before, to {where}; nothing published again")
    else:
        click.echo(f"DLQ {partition}/{offset} replayed by {answer['author']} to {where}")


#: Added to the ``dlq`` group of ``adplatform.cli.ingest`` beside its ``show``.
SUBCOMMANDS: tuple[click.Command, ...] = (dlq_list, dlq_replay)
