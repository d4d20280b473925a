"""``adplatform report``: a Spark batch job over the archive → CSV files, PNG charts and one HTML page.

Two sources, the same figures (``archive.warehouse.report`` lists the differences of detail):

- the warehouse's aggregates (``campaign_day``, ``demographic_day``), when the warehouse has been loaded,
  the window is whole UTC days, and every archive file of those days is loaded (else its figures would lag);
- the raw archive as ``archive.reader`` lists it (compacted partitions plus committed sink files, under the
  shared lock so a concurrent compaction cannot pull files away mid-read), de-duplicated by ``event_id``,
  and the exported ``warehouse/served_ads`` when present.

``ReportOptions.source`` ``auto`` picks the first that applies and says why on stderr. Output goes to
``<archive_dir>/reports/<UTC timestamp>/`` (or ``out_dir``): ``*.csv``, ``charts/*.png`` and
``report.html``. Progress lines go to stderr.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from adplatform.config import Config
from archive.charts import Chart, draw_charts
from archive.error import ArchiveError
from archive.html import render_html
from archive.layout import ArchiveLayout
from archive.metrics import STAGES, compute_figures
from archive.reader import read_lock, snapshot
from archive.request_counts import counts_files
from archive.table import ReportFigures, write_csv
from archive.warehouse.catalog import WarehouseConfig
from archive.warehouse.tables import LOADS

APP_NAME = "adplatform-report"

Source = Literal["auto", "warehouse", "archive"]


@dataclass(frozen=True)
class ReportOptions:
    """What to report on and where to write it: events in [since, until), read from ``source``."""

    since: datetime | None = None
    out_dir: Path | None = None
    top_n: int = 20
    until: datetime | None = None
    source: Source = "auto"


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, and the figures it shows."""

    out_dir: Path
    html_path: Path
    csv_paths: tuple[Path, ...]
    charts: tuple[Chart, ...]
    figures: ReportFigures


class StageProgress:
    """``report [3/11] top-spending campaigns (+1.2s)`` lines on stderr: progress without a terminal UI."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = time.monotonic()

    def __call__(self, name: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        self.stream.write(f"report [{self.done}/{self.total}] {name} (+{elapsed:.1f}s)\n")
        self.stream.flush()


def build_report(
    spark: Any,
    layout: ArchiveLayout,
    options: ReportOptions,
    progress: StageProgress | None = None,
    *,
    from_warehouse: bool = False,
) -> ReportResult:
    """Compute the figures with ``spark`` (a ``warehouse_session`` when ``from_warehouse``) and write
    every output file."""
    progress = progress if progress is not None else StageProgress(STAGES + 3)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    generated_at = datetime.now(UTC)
    progress("listing the archive")
    with read_lock(layout):
        if from_warehouse:
            from archive.warehouse.report import warehouse_figures

            figures = warehouse_figures(
                spark, options.since, options.until, counts_files=counts_files(layout), stage=progress
            )
        else:
            files = snapshot(layout).files
            if not files:
                raise ArchiveError(
                    f"no archived events under {layout.root} (run `adplatform archive run` first)"
                )
            figures = compute_figures(
                spark,
                list(files),
                layout.warehouse / "served_ads",
                options.since,
                stage=progress,
                counts_files=counts_files(layout),
                until=options.until,
            )
    if figures.totals.events == 0:
        raise ArchiveError(f"no {figures.source} events in the window ({_window(options)})")
    out_dir = options.out_dir or layout.reports / generated_at.strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("writing CSV files and charts")
    csv_paths = tuple(write_csv(table, out_dir) for table in figures.tables())
    charts = draw_charts(figures, out_dir / "charts", top_n=options.top_n)
    progress("writing the HTML page")
    html_path = out_dir / "report.html"
    html_path.write_text(
        render_html(
            figures,
            charts,
            generated_at=generated_at,
            since=options.since,
            until=options.until,
            top_n=options.top_n,
        ),
        encoding="utf-8",
    )
    return ReportResult(out_dir, html_path, csv_paths, tuple(charts), figures)


def _window(options: ReportOptions) -> str:
    since = options.since.isoformat() if options.since else "the start"
    return f"from {since} until {options.until.isoformat() if options.until else 'now'}"


def warehouse_loaded(warehouse: WarehouseConfig) -> bool:
    """Whether a load has ever committed (a local warehouse: its load log holds a file; a remote one is
    assumed loaded, the catalog tells)."""
    if not warehouse.location.startswith("file:"):
        return True
    log = Path(urlsplit(warehouse.location).path) / LOADS
    return log.is_dir() and any(log.rglob("*.parquet"))


def unloaded_files(spark: Any, layout: ArchiveLayout, options: ReportOptions) -> int:
    """Archive files of the window's days that the warehouse has not loaded (a new or compacted file)."""
    from archive.warehouse.load import archive_files, loaded_files

    since = options.since.astimezone(UTC).date().isoformat() if options.since else ""
    until = options.until.astimezone(UTC).date().isoformat() if options.until else "9999"
    with read_lock(layout):
        files = [f for f in archive_files(layout) if since <= f.day < until]
    loaded = loaded_files(spark)
    return sum(1 for f in files if (f.key, f.size) not in loaded)


def preselect(options: ReportOptions, warehouse: WarehouseConfig) -> tuple[bool, str]:
    """Whether to read the warehouse, before any JVM starts, and why (for ``auto``: the last check, files
    not loaded yet, needs the catalog and comes later)."""
    from archive.warehouse.report import whole_day

    days = whole_day(options.since) and whole_day(options.until)
    if options.source == "archive":
        return False, "--source archive"
    if options.source == "warehouse":
        if not days:
            raise ArchiveError(
                "the warehouse holds whole UTC days: --since/--until must be dates (midnights)"
            )
        return True, "--source warehouse"
    if not days:
        return False, "--since/--until are not whole UTC days, which is all the warehouse holds"
    if not warehouse_loaded(warehouse):
        return False, "the warehouse has not been loaded (`adplatform warehouse load`)"
    return True, "the warehouse is loaded"


def run_report(config: Config, options: ReportOptions) -> ReportResult:
    """``build_report`` in its own local Spark session (stopped at the end), from the source
    ``options.source`` names or (``auto``) the warehouse when it can give the same figures."""
    from archive.session import create_session

    layout = ArchiveLayout(config.archive_dir)
    warehouse = WarehouseConfig.from_config(config)
    from_warehouse, why = preselect(options, warehouse)
    if not from_warehouse:
        with read_lock(layout):
            if not snapshot(layout).files:  # fail before paying for a JVM
                raise ArchiveError(
                    f"no archived events under {layout.root} (run `adplatform archive run` first)"
                )
    progress = StageProgress(STAGES + 4)
    progress("starting Spark")
    if from_warehouse:
        from archive.warehouse.catalog import warehouse_session

        spark = warehouse_session(APP_NAME, config)
    else:
        spark = create_session(APP_NAME, config.stack_dir)
    try:
        if from_warehouse and options.source == "auto":
            behind = unloaded_files(spark, layout, options)
            if behind:
                from_warehouse = False
                why = f"{behind} archive files of the window are not loaded yet (`adplatform warehouse load`)"
        progress.stream.write(f"report: reading the {'warehouse' if from_warehouse else 'archive'}: {why}\n")
        return build_report(spark, layout, options, progress, from_warehouse=from_warehouse)
    finally:
        spark.stop()
