"""The ``adplatform`` command: one CLI whose subcommands import their package lazily.

This module alone dispatches to every package; each command imports what it runs inside its body, so
``adplatform stack status`` does not pay for Spark or Starlette imports.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from adplatform.config import Config, ConfigError, load_config


def _config() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every retry at WARNING/ERROR; one line per outage is enough.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(config.log_level)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """adplatform: real-time ad platform (Kafka → PostgreSQL, in-memory auction, Redis budgets, Spark)."""


# --- stack ------------------------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local stack: PostgreSQL :15432, Redis :16379, Kafka :19092 under .stack/ (no Docker)."""


@stack.command("up")
def stack_up() -> None:
    """Install what is missing, start every service, wait until each answers, migrate, create topics."""
    from adplatform import stack as st

    try:
        st.up(_config())
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("fetch")
def stack_fetch() -> None:
    """Install missing system packages and fetch the Kafka and Spark jars (no service is started)."""
    from adplatform import stack as st

    try:
        st.ensure_installed()
        st.fetch_jars(st.Paths(_config().stack_dir))
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("down")
def stack_down() -> None:
    """Stop the services the stack started (by PID). Data stays in .stack/."""
    from adplatform import stack as st

    st.down(_config())


@stack.command("status")
def stack_status() -> None:
    """Each service, its port, PID and health. Exits 1 when any is down."""
    from adplatform import stack as st

    rows = st.status(_config())
    click.echo(f"{'service':<10} {'port':>6} {'pid':>8}  health")
    for name, port, pid, ok in rows:
        click.echo(f"{name:<10} {port:>6} {pid or '-':>8}  {'up' if ok else 'DOWN'}")
    if not all(ok for *_, ok in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", required=False, type=click.Choice(["postgres", "redis", "kafka"]))
@click.option("-n", "--lines", default=40, show_default=True, help="Lines from the end of each log.")
def stack_logs(service: str | None, lines: int) -> None:
    """Show the end of each service's log under .stack/logs/."""
    from adplatform import stack as st

    for name, path in st.log_files(_config()).items():
        if service and name != service:
            continue
        click.secho(f"==> {path} <==", bold=True)
        if path.exists():
            click.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


@stack.command("stop-service", hidden=True)
@click.argument("service", type=click.Choice(["postgres", "redis", "kafka"]))
def stack_stop_service(service: str) -> None:
    """Stop one service (fault-injection tests)."""
    from adplatform import stack as st

    st.stop_service(_config(), service)


@main.command("migrate")
def migrate_cmd() -> None:
    """Apply pending SQL migrations to the configured database."""
    import asyncio

    import asyncpg

    from adplatform.migrate import migrate

    config = _config()

    async def run() -> list[str]:
        conn = await asyncpg.connect(config.pg_dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")


@main.command("topics")
def topics_cmd() -> None:
    """Create the platform's Kafka topics if missing."""
    import asyncio

    from adplatform.kafka import ensure_topics

    created = asyncio.run(ensure_topics(_config()))
    click.echo(f"created: {', '.join(created) or 'nothing (all exist)'}")


# --- ingest -----------------------------------------------------------------------------------------------


@main.group()
def generate() -> None:
    """Deterministic generators of campaign files and users."""


@generate.command("campaigns")
@click.option("--count", default=5000, show_default=True, help="Instructions (rows) to write.")
@click.option("--seed", default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def generate_campaigns_cmd(count: int, seed: int, output: Path) -> None:
    """Write a campaign-instruction CSV in the seed format, with flights live from now."""
    from datetime import UTC, datetime

    from ingest.generator import generate_campaigns, write_campaigns_csv

    rows = generate_campaigns(count, seed, datetime.now(UTC))
    write_campaigns_csv(output, rows)
    click.echo(f"wrote {len(rows)} instructions to {output}")


@generate.command("users")
@click.option("--count", default=1000, show_default=True)
@click.option("--seed", default=1, show_default=True)
def generate_users_cmd(count: int, seed: int) -> None:
    """Insert generated users into online_ads."user" (idempotent for a seed)."""
    import asyncio

    from ingest.generator import generate_users
    from ingest.users_postgres import write_users

    config = _config()
    written = asyncio.run(write_users(config.pg_dsn, generate_users(count, seed)))
    click.echo(f'users: {written} written to online_ads."user"')


@main.command("produce")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=float, default=None, help="Rows per second (default: as fast as possible).")
@click.option("--rebase-dates", is_flag=True, help="Move every flight to start now, keeping its length.")
def produce_cmd(file: Path, rate: float | None, rebase_dates: bool) -> None:
    """Publish a campaign-instruction CSV to campaign-instructions (key = campaign_id)."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.producer import produce_file

    config = _config()
    total = max(sum(1 for _ in file.open("rb")) - 1, 0)
    with Progress(
        TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True, disable=not sys.stderr.isatty(),
    ) as progress:  # fmt: skip
        task = progress.add_task("rows", total=total)
        summary = asyncio.run(
            produce_file(
                config,
                file,
                rate=rate,
                rebase=rebase_dates,
                on_progress=lambda n: progress.update(task, completed=n),
                on_error=lambda msg: click.echo(msg, err=True),
            )
        )
    click.echo(
        f"produced {summary.published} instructions to {config.topics.instructions} "
        f"in {summary.elapsed_s:.1f}s ({summary.rate:,.0f}/s); skipped {summary.skipped} malformed rows"
    )


@main.command("manager")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds at most.")
@click.option("--max-batch", type=click.IntRange(1, 100_000), default=5000, show_default=True)
def manager_cmd(until_idle: bool, timeout: float | None, max_batch: int) -> None:
    """Run the Ad Manager (consumer group ad-manager): instructions → PostgreSQL, Redis, ad-changes."""
    import asyncio

    from ingest.manager import run_manager

    config = _config()
    _logging(config)
    stats = asyncio.run(
        run_manager(config, until_idle=until_idle, idle_timeout_s=timeout, max_batch=max_batch)
    )
    click.echo(
        f"manager: {stats.messages} messages in {stats.batches} batches, {stats.applied} campaign states "
        f"applied, {stats.rejected} rejected to the DLQ"
    )


@main.group()
def dlq() -> None:
    """The dead-letter queue of campaign instructions."""


@dlq.command("show")
@click.option("--limit", type=int, default=None, help="At most this many entries.")
def dlq_show(limit: int | None) -> None:
    """List DLQ entries with their reasons and the start of their raw value."""
    import asyncio

    from ingest.dlq import read_dlq

    config = _config()
    entries = asyncio.run(read_dlq(config, limit=limit))
    for e in entries:
        raw = e.value[:80]
        click.echo(f"{e.source:<40} {e.reason}\n    value: {raw!r}{'...' if len(e.value) > 80 else ''}")
    click.echo(f"{len(entries)} entries in {config.topics.instructions_dlq}")


if __name__ == "__main__":  # pragma: no cover
    main()
