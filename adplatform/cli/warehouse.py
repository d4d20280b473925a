"""``adplatform warehouse load`` and ``adplatform sql``: the catalogued warehouse and SQL over it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from adplatform.cli.common import config, setup_logging
from adplatform.config import Config

if TYPE_CHECKING:
    from archive.warehouse.check import BooksCheck


@click.group("warehouse")
def warehouse_group() -> None:
    """The warehouse: feedback and its aggregates as catalogued tables (Hive metastore in PostgreSQL)."""


@warehouse_group.command("load")
@click.option("--master", default="local[2]", show_default=True, help="Spark master URL (spark://host:7077).")
@click.option("--print", "print_only", is_flag=True, help="Print the command line, do not run it.")
@click.option(
    "--check", is_flag=True, help="Then `warehouse check` in the same job (exit 1 if the books differ)."
)
@click.option(
    "--books-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --check: also write the books there as JSON.",
)
def warehouse_load(master: str, print_only: bool, check: bool, books_json: Path | None) -> None:
    """Load new archive files into the feedback table and rebuild the aggregates of their days, under
    spark-submit (exactly once: a second run with nothing new changes nothing). Cron-friendly."""
    from archive.error import ArchiveError
    from archive.submit import run_submit
    from archive.warehouse.submit import warehouse_submit_command

    try:
        if books_json is not None and not check:
            raise click.UsageError("--books-json goes with --check")
        job_args = (("--check",) if check else ()) + (
            ("--books-json", str(books_json.absolute())) if books_json is not None else ()
        )
        command = warehouse_submit_command(config().stack_dir, master=master, job_args=job_args)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(command.shell(), err=not print_only)
    if not print_only:
        raise SystemExit(run_submit(command))


def books_check(cfg: Config) -> BooksCheck:
    """``archive.warehouse.check.check_books`` in a warehouse session of its own (``warehouse check``,
    ``reconcile --check --warehouse``)."""
    from archive.error import ArchiveError
    from archive.warehouse.catalog import warehouse_session
    from archive.warehouse.check import check_books

    try:
        spark = warehouse_session("adplatform-warehouse-check", cfg)
        try:
            return check_books(spark, cfg.pg_dsn)
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None


@warehouse_group.command("check")
@click.option("--show", type=click.IntRange(min=0), default=20, show_default=True, help="Differences listed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: totals, verdict, differences.")
def warehouse_check(show: int, as_json: bool) -> None:
    """The books add up: the ledger's spend (PostgreSQL) = feedback's = campaign_day's, per campaign and
    day of the days loaded, to the micro; exit 1 and the differing campaign-days otherwise (run after a
    load)."""
    cfg = config()
    setup_logging(cfg)
    books = books_check(cfg)
    if as_json:
        click.echo(json.dumps(books.as_json()))
    else:
        click.echo(books.summary())
        for line in books.difference_lines()[:show]:
            click.echo(f"  {line}")
    if not books.balanced:
        raise SystemExit(1)


@click.command("sql")
@click.argument("statement")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header line.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object per row (decimals as strings).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many rows.")
def sql_cmd(statement: str, fmt: str | None, limit: int | None) -> None:
    """Run a Spark SQL statement over the warehouse's tables (feedback, served_ads, campaign_day,
    demographic_day, campaign_history, warehouse_loads) and print the result: a table for people, --csv or
    --json for scripts."""
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
