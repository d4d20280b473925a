"""``adplatform generate …``, ``produce``, ``manager``, ``dlq …``: campaigns into Kafka, PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from adplatform.cli.common import AT_LEAST_ONE, POSITIVE, config, serve_metrics, setup_logging


@click.group()
def generate() -> None:
    """Deterministic generators of campaign files and users."""


@generate.command("campaigns")
@click.option(
    "--count", type=AT_LEAST_ONE, default=5000, show_default=True, help="Instructions (rows) to write."
)
@click.option("--seed", default=1, show_default=True, help="Random seed: the same seed writes the same file.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The CSV file to write.",
)  # fmt: skip
@click.option(
    "--capped-share", default=0.1, show_default=True, type=click.FloatRange(0, 1),
    help="Share of new campaigns with a frequency_cap (3/1h, 5/1d, ...; drawn from the seed).",
)  # fmt: skip
def generate_campaigns_cmd(count: int, seed: int, output: Path, capped_share: float) -> None:
    """Write a campaign-instruction CSV in the seed format, with flights live from now."""
    from datetime import UTC, datetime

    from ingest.generator import generate_campaigns, write_campaigns_csv

    rows = generate_campaigns(count, seed, datetime.now(UTC), capped_share=capped_share)
    write_campaigns_csv(output, rows)
    click.echo(f"wrote {len(rows)} instructions to {output}")


@generate.command("users")
@click.option("--count", type=AT_LEAST_ONE, default=1000, show_default=True, help="Users to insert.")
@click.option("--seed", default=1, show_default=True, help="Random seed: the same seed, the same users.")
def generate_users_cmd(count: int, seed: int) -> None:
    """Insert generated users into online_ads."user" (idempotent for a seed)."""
    import asyncio

    from ingest.generator import generate_users
    from ingest.users_postgres import write_users

    written = asyncio.run(write_users(config().pg_dsn, generate_users(count, seed)))
    click.echo(f'users: {written} written to online_ads."user"')


@click.command("produce")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=POSITIVE, default=None, help="Rows per second (default: as fast as possible).")
@click.option("--rebase-dates", is_flag=True, help="Move every flight to start now, keeping its length.")
def produce_cmd(file: Path, rate: float | None, rebase_dates: bool) -> None:
    """Publish a campaign-instruction CSV to campaign-instructions (key = campaign_id)."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.producer import produce_file

    cfg = config()
    total = max(sum(1 for _ in file.open("rb")) - 1, 0)
    with Progress(
        TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True, disable=not sys.stderr.isatty(),
    ) as progress:  # fmt: skip
        task = progress.add_task("rows", total=total)
        summary = asyncio.run(
            produce_file(
                cfg,
                file,
                rate=rate,
                rebase=rebase_dates,
                on_progress=lambda n: progress.update(task, completed=n),
                on_error=lambda msg: click.echo(msg, err=True),
            )
        )
    click.echo(
        f"produced {summary.published} instructions to {cfg.topics.instructions} "
        f"in {summary.elapsed_s:.1f}s ({summary.rate:,.0f}/s); skipped {summary.skipped} malformed rows"
    )


@click.command("manager")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=POSITIVE, default=None, help="Stop after this many seconds at most.")
@click.option(
    "--max-batch", type=click.IntRange(1, 100_000), default=5000, show_default=True,
    help="Instructions read and applied per batch (one PostgreSQL transaction).",
)  # fmt: skip
def manager_cmd(until_idle: bool, timeout: float | None, max_batch: int) -> None:
    """Run the Ad Manager (consumer group ad-manager): instructions → PostgreSQL, Redis, ad-changes."""
    import asyncio

    from ingest.manager import run_manager

    cfg = config()
    setup_logging(cfg)
    if not until_idle:  # a service, not a one-shot drain
        serve_metrics(cfg, "manager")
    stats = asyncio.run(run_manager(cfg, until_idle=until_idle, idle_timeout_s=timeout, max_batch=max_batch))
    click.echo(
        f"manager: {stats.messages} messages in {stats.batches} batches, {stats.applied} campaign states "
        f"applied, {stats.rejected} rejected to the DLQ"
    )


@click.command("served-writer")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=POSITIVE, default=None, help="Stop after this many seconds at most.")
def served_writer_cmd(until_idle: bool, timeout: float | None) -> None:
    """Copy served-ads into online_ads.served_ads in batches (consumer group served-writer)."""
    import asyncio

    from ingest.served_writer import run_served_writer

    cfg = config()
    setup_logging(cfg)
    if not until_idle:
        serve_metrics(cfg, "served-writer")
    stats = asyncio.run(run_served_writer(cfg, until_idle=until_idle, timeout_s=timeout))
    click.echo(
        f"served-writer: {stats.messages} messages in {stats.batches} batches, {stats.inserted} rows "
        f"inserted, {stats.skipped} undecodable skipped"
    )


@click.group()
def dlq() -> None:
    """The dead-letter queue of campaign instructions."""


@dlq.command("show")
@click.option("--limit", type=AT_LEAST_ONE, default=None, help="At most this many entries.")
def dlq_show(limit: int | None) -> None:
    """List DLQ entries with their reasons and the start of their raw value."""
    import asyncio

    from ingest.dlq import read_dlq

    cfg = config()
    entries = asyncio.run(read_dlq(cfg, limit=limit))
    for e in entries:
        raw = e.value[:80]
        click.echo(f"{e.source:<40} {e.reason}\n    value: {raw!r}{'...' if len(e.value) > 80 else ''}")
    click.echo(f"{len(entries)} entries in {cfg.topics.instructions_dlq}")


COMMANDS: tuple[click.Command, ...] = (generate, produce_cmd, manager_cmd, served_writer_cmd, dlq)
