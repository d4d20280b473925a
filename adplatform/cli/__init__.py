"""The ``adplatform`` command: one CLI whose subcommands import their package lazily.

This module alone dispatches to every package; each command imports what it runs inside its body, so
``adplatform stack status`` does not pay for Spark or Starlette imports.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
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
    from devstack import stack as st

    try:
        st.up(_config())
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("fetch")
def stack_fetch() -> None:
    """Install missing system packages and fetch the Kafka and Spark jars (no service is started)."""
    from devstack import stack as st

    try:
        st.ensure_installed()
        st.fetch_jars(st.Paths(_config().stack_dir))
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("down")
def stack_down() -> None:
    """Stop the services the stack started (by PID). Data stays in .stack/."""
    from devstack import stack as st

    st.down(_config())


@stack.command("status")
def stack_status() -> None:
    """Each service, its port, PID and health. Exits 1 when any is down."""
    from devstack import stack as st

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
    from devstack import stack as st

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
    from devstack import stack as st

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


# --- adserver ---------------------------------------------------------------------------------------------


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option(
    "--server", type=click.Choice(["uvicorn", "granian"]), default="uvicorn", show_default=True,
    help="uvicorn (uvloop + httptools) or granian (Rust HTTP server; faster here, see bench/http.py).",
)  # fmt: skip
def serve_cmd(host: str, port: int, workers: int, server: str) -> None:
    """Run the ad server: each worker bootstraps its index from ad-changes, then serves GET /ad/user/..."""
    from adserver.http.server import run

    config = _config()  # fail fast on a bad environment; each worker reads it again
    run(host=host, port=port, workers=workers, server="granian" if server == "granian" else "uvicorn",
        log_level=config.log_level)  # fmt: skip


@main.command("served-writer")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds at most.")
def served_writer_cmd(until_idle: bool, timeout: float | None) -> None:
    """Copy served-ads into online_ads.served_ads in batches (consumer group served-writer)."""
    import asyncio

    from ingest.served_writer import run_served_writer

    config = _config()
    _logging(config)
    stats = asyncio.run(run_served_writer(config, until_idle=until_idle, timeout_s=timeout))
    click.echo(
        f"served-writer: {stats.messages} messages in {stats.batches} batches, {stats.inserted} rows "
        f"inserted, {stats.skipped} undecodable skipped"
    )


# --- budgets ----------------------------------------------------------------------------------------------


@main.command("ledger")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds at most.")
def ledger_cmd(until_idle: bool, timeout: float | None) -> None:
    """Run the spend ledger: ad-feedback → per-campaign spend in PostgreSQL, exactly once."""
    import asyncio

    from budget.ledger import run_ledger

    config = _config()
    _logging(config)
    stats = asyncio.run(run_ledger(config, until_idle=until_idle, timeout_s=timeout))
    click.echo(f"ledger: {stats.messages} events read, {stats.charged_events} charges booked")


@main.command("pacer")
@click.option("--slots", type=int, default=None, help="Stop after pacing this many slots (tests).")
def pacer_cmd(slots: int | None) -> None:
    """Run the slot pacer: at each slot boundary, slot budget = remaining budget / remaining slots."""
    import asyncio
    import signal

    import redis.asyncio as aioredis

    from budget.pacer import Pacer

    config = _config()
    _logging(config)

    async def run() -> int:
        client = aioredis.Redis.from_url(config.redis_url, socket_timeout=10)
        pacer = Pacer(client, slot_s=config.slot_s)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pacer.stop)
        try:
            return sum(r.acted for r in await pacer.run(slots=slots))
        finally:
            await client.aclose()

    acted = asyncio.run(run())
    click.echo(f"pacer: acted in {acted} slot(s)")


@main.command("reconcile")
@click.option("--check", is_flag=True, help="Only compare; exit 1 on any difference.")
@click.option("--interval", type=float, default=None, help="Repeat every this many seconds (a service).")
def reconcile_cmd(check: bool, interval: float | None) -> None:
    """Compare Redis spend with the ledger (PostgreSQL + unbooked events) and repair drift."""
    import asyncio

    from budget.reconcile import open_reconciler

    config = _config()
    _logging(config)

    async def run() -> int:
        reconciler, pool, client = await open_reconciler(config)
        try:
            while True:
                if check:
                    diffs = await reconciler.diffs()
                    click.echo(
                        f"{'campaign':<40} {'redis':>14} {'postgres':>14} {'unbooked':>12} {'diff':>12}"
                    )
                    for d in diffs:
                        redis_text = "missing" if d.redis_micros is None else str(d.redis_micros)
                        click.echo(
                            f"{d.campaign_id:<40} {redis_text:>14} {d.postgres_micros:>14} "
                            f"{d.pending_micros:>12} {d.diff_micros:>12}"
                        )
                    click.echo(f"{len(diffs)} campaign(s) differ (amounts in micro-units)")
                    return 1 if diffs else 0
                repaired = await reconciler.repair()
                click.echo(f"reconcile: repaired {len(repaired)} campaign(s)")
                if interval is None:
                    return 0
                await asyncio.sleep(interval)
        finally:
            await pool.close()
            await client.aclose()

    sys.exit(asyncio.run(run()))


# --- simulation -------------------------------------------------------------------------------------------


def _simulate(
    dsn: str, ad_url: str, feedback_url: str, duration: float, rate: float, concurrency: int
) -> None:
    import asyncio

    from loadtest.simulator import Simulator, format_summary, load_users

    async def run() -> str:
        users = await load_users(dsn)
        try:
            sim = Simulator(
                users, ad_url=ad_url, feedback_url=feedback_url, rate=rate, concurrency=concurrency
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None

        def tick(s: object, elapsed: float) -> None:
            from loadtest.simulator import SimSummary

            assert isinstance(s, SimSummary)
            click.echo(
                f"\r[{elapsed:5.0f}s/{duration:.0f}s] requests {s.requests}  served {s.served}  "
                f"feedback {s.feedback_ok}  errors {s.errors}",
                nl=False,
                err=True,
            )

        summary = await sim.run(duration, on_tick=tick)
        click.echo("", err=True)
        return format_summary(summary, spend=await _redis_spend())

    async def _redis_spend() -> str:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from budget.budget_redis import BudgetStore
        from index.money import format_micros

        config = _config()
        client = aioredis.Redis.from_url(config.redis_url, socket_timeout=5)
        try:
            return format_micros(sum((await BudgetStore(client, slot_s=config.slot_s).spent_all()).values()))
        except (RedisError, OSError):
            return "n/a"
        finally:
            await client.aclose()

    click.echo(asyncio.run(run()))


@main.command("simulate")
@click.option("--duration", type=float, default=60, show_default=True, help="Seconds to run.")
@click.option("--rate", type=float, default=200, show_default=True, help="Ad requests per second.")
@click.option("--concurrency", type=int, default=32, show_default=True, help="Requests in flight at most.")
@click.option("--server", default="http://127.0.0.1:8000", show_default=True, help="Ad server base URL.")
def simulate_cmd(duration: float, rate: float, concurrency: int, server: str) -> None:
    """Simulate users: ad requests, then feedback drawn from age-bucket action rates; prints a summary."""
    _simulate(_config().pg_dsn, server, server, duration, rate, concurrency)


@main.command("simulate-legacy")
@click.argument("db_host")
@click.argument("db_user")
@click.argument("db_pass")
@click.argument("db_name")
@click.argument("scheme", type=click.Choice(["http", "https"]))
@click.argument("ad_host")
@click.argument("ad_port", type=int)
@click.argument("fb_host")
@click.argument("fb_port", type=int)
@click.option("--duration", type=float, default=60, show_default=True, help="Seconds to run (bounded).")
@click.option("--rate", type=float, default=200, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True)
def simulate_legacy_cmd(
    db_host: str, db_user: str, db_pass: str, db_name: str, scheme: str, ad_host: str, ad_port: int,
    fb_host: str, fb_port: int, duration: float, rate: float, concurrency: int,
) -> None:  # fmt: skip
    """The original simulator's command line: DB host/user/password/name, then the ad and feedback servers."""
    from urllib.parse import quote

    host, _, port = db_host.partition(":")
    dsn = f"postgresql://{quote(db_user)}:{quote(db_pass)}@{host}:{port or 5432}/{quote(db_name)}"
    _simulate(
        dsn, f"{scheme}://{ad_host}:{ad_port}", f"{scheme}://{fb_host}:{fb_port}", duration, rate, concurrency
    )


# --- archive ----------------------------------------------------------------------------------------------


@main.group("archive")
def archive_group() -> None:
    """The Spark archive of ad-feedback: streaming writer, compaction, warehouse export."""


@archive_group.command("run")
@click.option("--trigger-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--until-idle", is_flag=True, help="Archive what the topic holds now, then stop.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Stop after this long.")
@click.option("--max-offsets-per-trigger", type=click.IntRange(min=1), default=500_000, show_default=True)
def archive_run(
    trigger_s: float, until_idle: bool, max_seconds: float | None, max_offsets_per_trigger: int
) -> None:
    """Stream ad-feedback to JSON under <archive_dir>/feedback (stop: SIGTERM, Ctrl-C, `archive stop`)."""
    from archive.error import ArchiveError
    from archive.feedback_writer import APP_NAME, StopSignal, WriterOptions, run_writer
    from archive.layout import ArchiveLayout
    from archive.session import create_session

    if until_idle and max_seconds is not None:
        raise click.UsageError("--until-idle and --max-seconds are exclusive")
    config = _config()
    _logging(config)
    options = WriterOptions(
        trigger_s=trigger_s,
        until_idle=until_idle,
        max_seconds=max_seconds,
        max_offsets_per_trigger=max_offsets_per_trigger,
    )
    stop = StopSignal(ArchiveLayout(config.archive_dir).stop_file)
    stop.install_handlers()
    try:
        spark = create_session(APP_NAME, config.stack_dir)
        try:
            summary = run_writer(spark, config, options, stop=stop)
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    batches = summary.batches.get("feedback-archive", 0)
    rows = summary.input_rows.get("feedback-archive", 0)
    click.echo(
        f"archive: {rows} records in {batches} micro-batches, {summary.elapsed_s:.1f}s → {config.archive_dir}"
    )


@archive_group.command("stop")
def archive_stop() -> None:
    """Ask the running `archive run` on this archive directory to stop after its current micro-batch."""
    from archive.feedback_writer import request_stop

    click.echo(f"stop requested: {request_stop(_config())}")


@archive_group.command("compact")
@click.option("--all", "all_partitions", is_flag=True, help="Also partitions still open (writer stopped).")
@click.option("--grace-minutes", type=click.IntRange(min=0), default=15, show_default=True)
def archive_compact(all_partitions: bool, grace_minutes: int) -> None:
    """Merge the committed part files of each closed hour into one file (feedback_compacted/)."""
    from datetime import timedelta

    from archive.compact import compact
    from archive.error import ArchiveError
    from archive.layout import ArchiveLayout

    config = _config()
    _logging(config)
    try:
        s = compact(
            ArchiveLayout(config.archive_dir),
            grace=timedelta(minutes=grace_minutes),
            all_partitions=all_partitions,
        )
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"compacted {s.partitions_compacted} partitions: {s.files_merged} files → "
        f"{s.records_written} records; {s.partitions_open} open partitions left; "
        f"{s.leftovers_removed} leftovers of an interrupted run removed"
    )


@archive_group.command("export")
def archive_export() -> None:
    """Snapshot online_ads.ads and served_ads (JDBC) to Parquet under <archive_dir>/warehouse."""
    from archive.error import ArchiveError
    from archive.export import export_tables
    from archive.layout import ArchiveLayout
    from archive.session import create_session

    config = _config()
    _logging(config)
    try:
        spark = create_session("adplatform-export", config.stack_dir)
        try:
            summary = export_tables(spark, config.pg_dsn, ArchiveLayout(config.archive_dir))
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    for table, rows in summary.rows.items():
        click.echo(f"{table}: {rows} rows → {summary.paths[table]}")


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date/time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@main.command("report")
@click.option("--since", callback=_since, help="ISO date/time (UTC unless it has an offset).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output directory."
)
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Campaigns shown.")
def report_cmd(since: datetime | None, out: Path | None, top: int) -> None:
    """Report over the archive: CSVs, PNG charts and one HTML page; prints the page's path."""
    from archive.error import ArchiveError
    from archive.report import ReportOptions, run_report

    config = _config()
    _logging(config)
    try:
        result = run_report(config, ReportOptions(since=since, out_dir=out, top_n=top))
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(result.html_path))


if __name__ == "__main__":  # pragma: no cover
    main()
