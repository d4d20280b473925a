"""``adplatform report``: a Spark batch job over the archive → CSV files, PNG charts and one HTML page.

Reads the archive as ``archive.reader`` lists it (compacted partitions plus committed sink files, under the
shared lock so a concurrent compaction cannot pull files away mid-read), de-duplicated by ``event_id``, and
the exported ``warehouse/served_ads`` when present. Output goes to ``<archive_dir>/reports/<UTC timestamp>/``
(or ``out_dir``): ``*.csv``, ``charts/*.png`` and ``report.html``. Progress lines go to stderr.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from adplatform.config import Config
from archive.charts import Chart, draw_charts
from archive.error import ArchiveError
from archive.html import render_html
from archive.layout import ArchiveLayout
from archive.metrics import STAGES, compute_figures
from archive.reader import read_lock, snapshot
from archive.request_counts import counts_files
from archive.table import ReportFigures, write_csv

APP_NAME = "adplatform-report"


@dataclass(frozen=True)
class ReportOptions:
    """What to report on and where to write it."""

    since: datetime | None = None
    out_dir: Path | None = None
    top_n: int = 20


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
    spark: Any, layout: ArchiveLayout, options: ReportOptions, progress: StageProgress | None = None
) -> ReportResult:
    """Compute the figures with ``spark`` and write every output file."""
    progress = progress if progress is not None else StageProgress(STAGES + 3)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    generated_at = datetime.now(UTC)
    progress("listing the archive")
    with read_lock(layout):
        files = snapshot(layout).files
        if not files:
            raise ArchiveError(f"no archived events under {layout.root} (run `adplatform archive run` first)")
        figures = compute_figures(
            spark,
            list(files),
            layout.warehouse / "served_ads",
            options.since,
            stage=progress,
            counts_files=counts_files(layout),
        )
    if figures.totals.events == 0:
        raise ArchiveError(f"no archived events since {options.since}")
    out_dir = options.out_dir or layout.reports / generated_at.strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("writing CSV files and charts")
    csv_paths = tuple(write_csv(table, out_dir) for table in figures.tables())
    charts = draw_charts(figures, out_dir / "charts", top_n=options.top_n)
    progress("writing the HTML page")
    html_path = out_dir / "report.html"
    html_path.write_text(
        render_html(figures, charts, generated_at=generated_at, since=options.since, top_n=options.top_n),
        encoding="utf-8",
    )
    return ReportResult(out_dir, html_path, csv_paths, tuple(charts), figures)


def run_report(config: Config, options: ReportOptions) -> ReportResult:
    """``build_report`` in its own local Spark session (stopped at the end)."""
    from archive.session import create_session

    layout = ArchiveLayout(config.archive_dir)
    with read_lock(layout):
        if not snapshot(layout).files:  # fail before paying for a JVM
            raise ArchiveError(f"no archived events under {layout.root} (run `adplatform archive run` first)")
    progress = StageProgress(STAGES + 4)
    progress("starting Spark")
    spark = create_session(APP_NAME, config.stack_dir)
    try:
        return build_report(spark, layout, options, progress)
    finally:
        spark.stop()
