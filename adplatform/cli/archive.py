"""``adplatform archive …`` and ``report``: the Spark archive of ad-feedback and the reports over it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from adplatform.cli.common import config, serve_metrics, setup_logging


@click.group("archive")
def archive_group() -> None:
    """The Spark archive of ad-feedback: streaming writer, compaction, warehouse export."""


@archive_group.command("run")
@click.option(
    "--trigger-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
    help="Seconds between micro-batches.",
)  # fmt: skip
@click.option("--until-idle", is_flag=True, help="Archive what the topic holds now, then stop.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Stop after this long.")
@click.option(
    "--max-offsets-per-trigger", type=click.IntRange(min=1), default=500_000, show_default=True,
    help="Records read per micro-batch at most (bounds a catch-up batch).",
)  # fmt: skip
def archive_run(
    trigger_s: float, until_idle: bool, max_seconds: float | None, max_offsets_per_trigger: int
) -> None:
    """Stream ad-feedback to JSON under <archive_dir>/feedback (stop: SIGTERM, Ctrl-C, `archive stop`)."""
    from archive.error import ArchiveError
    from archive.feedback_writer import APP_NAME, StopSignal, WriterOptions, run_writer
    from archive.layout import ArchiveLayout
    from archive.session import create_session, driver_java_options

    if until_idle and max_seconds is not None:
        raise click.UsageError("--until-idle and --max-seconds are exclusive")
    cfg = config()
    setup_logging(cfg)
    options = WriterOptions(
        trigger_s=trigger_s,
        until_idle=until_idle,
        max_seconds=max_seconds,
        max_offsets_per_trigger=max_offsets_per_trigger,
    )
    stop = StopSignal(ArchiveLayout(cfg.archive_dir).stop_file)
    stop.install_handlers()
    tracker = None
    if not until_idle and max_seconds is None:  # the archive service: its commit lag on its metrics port
        from archive.progress import ArchiveLagTracker

        serve_metrics(cfg, "archive")
        tracker = ArchiveLagTracker(cfg).start()
    try:
        spark = create_session(APP_NAME, cfg.stack_dir, **driver_java_options(cfg.archive_java_options))
        try:
            summary = run_writer(spark, cfg, options, stop=stop)
        finally:
            spark.stop()
            if tracker is not None:
                tracker.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    batches = summary.batches.get("feedback-archive", 0)
    rows = summary.input_rows.get("feedback-archive", 0)
    click.echo(
        f"archive: {rows} records in {batches} micro-batches, {summary.elapsed_s:.1f}s → {cfg.archive_dir}"
    )


@archive_group.command("stop")
def archive_stop() -> None:
    """Ask the running `archive run` on this archive directory to stop after its current micro-batch."""
    from archive.feedback_writer import request_stop

    click.echo(f"stop requested: {request_stop(config())}")


@archive_group.command("compact")
@click.option("--all", "all_partitions", is_flag=True, help="Also partitions still open (writer stopped).")
@click.option(
    "--grace-minutes", type=click.IntRange(min=0), default=15, show_default=True,
    help="An hour is closed this long after it ends (late records may still arrive).",
)  # fmt: skip
def archive_compact(all_partitions: bool, grace_minutes: int) -> None:
    """Merge the committed part files of each closed hour into one file (feedback_compacted/)."""
    from datetime import timedelta

    from archive.compact import compact
    from archive.error import ArchiveError
    from archive.layout import ArchiveLayout

    cfg = config()
    setup_logging(cfg)
    try:
        s = compact(
            ArchiveLayout(cfg.archive_dir),
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

    cfg = config()
    setup_logging(cfg)
    try:
        spark = create_session("adplatform-export", cfg.stack_dir)
        try:
            summary = export_tables(spark, cfg.pg_dsn, ArchiveLayout(cfg.archive_dir))
        finally:
            spark.stop()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    for table, rows in summary.rows.items():
        click.echo(f"{table}: {rows} rows → {summary.paths[table]}")


@archive_group.command("submit", context_settings={"ignore_unknown_options": True})
@click.option("--master", default="local[2]", show_default=True, help="Spark master URL (spark://host:7077).")
@click.option(
    "--packages", "use_packages", is_flag=True, help="The Kafka connector from Maven, not the stack's jars."
)
@click.option("--print", "print_only", is_flag=True, help="Print the command line, do not run it.")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def archive_submit(master: str, use_packages: bool, print_only: bool, job_args: tuple[str, ...]) -> None:
    """Run the streaming archive under spark-submit with this virtualenv's Spark and Python (no activation
    needed); arguments after `--` go to the job, e.g. `archive submit -- --until-idle`."""
    from archive.error import ArchiveError
    from archive.submit import run_submit, submit_command

    try:
        cfg = config()
        command = submit_command(
            cfg.stack_dir,
            master=master,
            job_args=job_args,
            use_packages=use_packages,
            java_options=cfg.archive_java_options,
        )
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(command.shell(), err=not print_only)
    if not print_only:
        raise SystemExit(run_submit(command))


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date/time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@click.command("report")
@click.option("--since", callback=_since, help="ISO date/time (UTC unless it has an offset), inclusive.")
@click.option("--until", callback=_since, help="ISO date/time (UTC unless it has an offset), exclusive.")
@click.option(
    "--source",
    type=click.Choice(["auto", "warehouse", "archive"]),
    default="auto",
    show_default=True,
    help="auto: the warehouse's aggregates when it is loaded, up to date for the window, and the window is "
    "whole UTC days (dates); else the raw archive files.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output directory."
)
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Campaigns shown.")
def report_cmd(
    since: datetime | None, until: datetime | None, source: str, out: Path | None, top: int
) -> None:
    """Report over the archive: CSVs, PNG charts and one HTML page; prints the page's path."""
    from typing import cast

    from archive.error import ArchiveError
    from archive.report import ReportOptions, Source, run_report

    cfg = config()
    setup_logging(cfg)
    if since is not None and until is not None and until <= since:
        raise click.UsageError("--until must be after --since")
    options = ReportOptions(since=since, until=until, source=cast(Source, source), out_dir=out, top_n=top)
    try:
        result = run_report(cfg, options)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(result.html_path))


COMMANDS: tuple[click.Command, ...] = (archive_group, report_cmd)
