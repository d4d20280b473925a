"""``adplatform warehouse load`` and ``adplatform sql``: the catalogued warehouse and SQL over it."""

from __future__ import annotations

import click

from adplatform.cli.common import config, setup_logging


@click.group("warehouse")
def warehouse_group() -> None:
    """The warehouse: feedback and its aggregates as catalogued tables (Hive metastore in PostgreSQL)."""


@warehouse_group.command("load")
@click.option("--master", default="local[2]", show_default=True, help="Spark master URL (spark://host:7077).")
@click.option("--print", "print_only", is_flag=True, help="Print the command line, do not run it.")
def warehouse_load(master: str, print_only: bool) -> None:
    """Load new archive files into the feedback table and rebuild the aggregates of their days, under
    spark-submit (exactly once: a second run with nothing new changes nothing). Cron-friendly."""
    from archive.error import ArchiveError
    from archive.submit import run_submit
    from archive.warehouse.submit import warehouse_submit_command

    try:
        command = warehouse_submit_command(config().stack_dir, master=master)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(command.shell(), err=not print_only)
    if not print_only:
        raise SystemExit(run_submit(command))


@warehouse_group.command("check")
@click.option("--show", type=click.IntRange(min=0), default=20, show_default=True, help="Differences listed.")
def warehouse_check(show: int) -> None:
    """The books add up: the ledger's spend (PostgreSQL) = feedback's = campaign_day's, per campaign and
    day, to the micro; exit 1 and the differing campaign-days otherwise (run after a load)."""
    from archive.error import ArchiveError
    from archive.warehouse.catalog import warehouse_session
    from archive.warehouse.check import check_books

    cfg = config()
    setup_logging(cfg)
    try:
        spark = warehouse_session("adplatform-warehouse-check", cfg)
        try:
            books = check_books(spark, cfg.pg_dsn)
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(books.summary())
    for d in books.differences[:show]:
        click.echo(
            f"  {d.day} {d.campaign_id}: ledger {d.ledger_micros}, feedback {d.feedback_micros}, "
            f"campaign_day {d.campaign_day_micros}"
        )
    if not books.balanced:
        raise SystemExit(1)


@click.command("sql")
@click.argument("statement")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header line.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object per row (decimals as strings).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many rows.")
def sql_cmd(statement: str, fmt: str | None, limit: int | None) -> None:
    """Run a Spark SQL statement over the warehouse's tables (feedback, campaign_day, demographic_day,
    warehouse_loads) and print the result: a table for people, --csv or --json for scripts."""
    from pyspark.errors import PySparkException

    from archive.error import ArchiveError
    from archive.warehouse.catalog import warehouse_session
    from archive.warehouse.query import format_result, run_query

    cfg = config()
    setup_logging(cfg)
    try:
        spark = warehouse_session("adplatform-sql", cfg)
        try:
            result = run_query(spark, statement, limit=limit)
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    except PySparkException as exc:  # a bad statement: Spark's own message (first line), exit 1
        raise click.ClickException(str(exc).strip().splitlines()[0]) from None
    click.echo(format_result(result, "table" if fmt is None else fmt), nl=False)  # type: ignore[arg-type]


COMMANDS: tuple[click.Command, ...] = (warehouse_group, sql_cmd)
