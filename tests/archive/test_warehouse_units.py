"""Pure parts of the warehouse: configuration, the submit command, file days, output formats."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from adplatform.config import load_config
from archive.error import ArchiveError
from archive.report import ReportOptions, preselect
from archive.warehouse.catalog import WarehouseConfig, hive_conf, location_uri
from archive.warehouse.check import BooksCheck, SpendDifference
from archive.warehouse.load import file_day
from archive.warehouse.query import QueryResult, format_result
from archive.warehouse.report import whole_day
from archive.warehouse.submit import warehouse_submit_command


def test_location_defaults_under_the_stack_and_takes_uris(tmp_path: Path) -> None:
    config = replace(load_config({}, dotenv=tmp_path / ".env"), stack_dir=tmp_path)
    default = WarehouseConfig.from_config(config)
    assert default.location == (tmp_path / "warehouse").as_uri()
    assert default.metastore_schema == "warehouse_metastore"
    env = {"ADP_WAREHOUSE_DIR": "s3a://bucket/wh/", "ADP_WAREHOUSE_METASTORE_SCHEMA": "meta"}
    s3 = WarehouseConfig.from_config(load_config(env, dotenv=tmp_path / ".env"))
    assert (s3.location, s3.metastore_schema, s3.path("feedback")) == (
        "s3a://bucket/wh",
        "meta",
        "s3a://bucket/wh/feedback",
    )
    assert location_uri("file:/data/wh") == "file:/data/wh"


def test_hive_conf_points_the_metastore_at_its_schema() -> None:
    conf = hive_conf(WarehouseConfig("file:/w", "postgresql://u:secret@db:5432/ads?sslmode=disable", "meta"))
    assert conf["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        "jdbc:postgresql://db:5432/ads?sslmode=disable&currentSchema=meta"
    )
    assert conf["spark.hadoop.javax.jdo.option.ConnectionUserName"] == "u"
    assert conf["spark.hadoop.javax.jdo.option.ConnectionPassword"] == "secret"
    assert conf["spark.hadoop.datanucleus.schema.autoCreateConstraints"] == "false"
    assert conf["spark.sql.warehouse.dir"] == "file:/w"


def test_submit_puts_the_jdbc_driver_on_the_driver_class_path(tmp_path: Path) -> None:
    jars = tmp_path / "jars" / "spark"
    jars.mkdir(parents=True)
    for name in ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "postgresql-42.7.8.jar"):
        (jars / name).touch()
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (python.parent / "spark-submit").touch()
    command = warehouse_submit_command(tmp_path, python=python, path="/usr/bin")
    argv = list(command.argv)
    assert argv[argv.index("--driver-class-path") + 1] == str(jars / "postgresql-42.7.8.jar")
    assert argv[-1].endswith("archive/warehouse/job.py")
    checked = warehouse_submit_command(tmp_path, python=python, path="/usr/bin", job_args=("--check",))
    assert checked.argv[-2:] == (argv[-1], "--check")
    assert ("PYSPARK_PYTHON", str(python)) in command.env


def test_file_day_is_the_archive_partition() -> None:
    assert file_day(Path("/a/feedback/date=2025-10-10/hour=03/part-0.json")) == "2025-10-10"
    assert file_day(Path("/a/feedback_compacted/date=2025-10-11/hour=00/part-00001.json")) == "2025-10-11"
    with pytest.raises(ValueError):
        file_day(Path("/a/feedback/part-0.json"))


RESULT = QueryResult(
    ("campaign_id", "date", "spend", "ctr"),
    (("c1", date(2025, 10, 10), Decimal("1.500000"), 0.123456789), ("c2", date(2025, 10, 11), None, None)),
)


def test_table_for_people() -> None:
    lines = format_result(RESULT, "table").splitlines()
    assert lines[0].split() == ["campaign_id", "date", "spend", "ctr"]
    assert lines[2].split() == ["c1", "2025-10-10", "1.500000", "0.123457"]
    assert lines[-1] == "(2 rows)"


def test_csv_and_json_for_scripts() -> None:
    assert format_result(RESULT, "csv").splitlines() == [
        "campaign_id,date,spend,ctr",
        "c1,2025-10-10,1.500000,0.123456789",
        "c2,2025-10-11,,",
    ]
    rows = [json.loads(line) for line in format_result(RESULT, "json").splitlines()]
    assert rows[0] == {"campaign_id": "c1", "date": "2025-10-10", "spend": "1.500000", "ctr": 0.123456789}
    assert rows[1]["spend"] is None


def test_the_report_reads_the_warehouse_only_for_whole_days_of_a_loaded_warehouse(tmp_path: Path) -> None:
    warehouse = WarehouseConfig(location_uri(str(tmp_path / "wh")), "postgresql://u@h/db", "meta")
    midnight = datetime(2025, 10, 10, tzinfo=UTC)
    noon = midnight + timedelta(hours=12)
    days = ReportOptions(since=midnight, until=midnight + timedelta(days=1))
    assert preselect(days, warehouse) == (
        False,
        "the warehouse has not been loaded (`adplatform warehouse load`)",
    )
    log = tmp_path / "wh" / "warehouse_loads"
    log.mkdir(parents=True)
    (log / "part-0.parquet").write_bytes(b"")
    assert preselect(days, warehouse)[0]
    assert preselect(ReportOptions(), warehouse)[0]  # everything: whole days too
    assert not preselect(ReportOptions(since=noon), warehouse)[0]
    assert not preselect(replace(days, source="archive"), warehouse)[0]
    with pytest.raises(ArchiveError, match="whole UTC days"):
        preselect(ReportOptions(until=noon, source="warehouse"), warehouse)
    # An offset that lands on a UTC midnight is a whole day.
    assert whole_day(datetime(2025, 10, 10, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))))


def _books(*differences: SpendDifference) -> BooksCheck:
    return BooksCheck(3, 5_000_000, 5_000_000, 5_000_000, differences, unloaded_days=("2025-10-20",))


def test_reconcile_check_warehouse_adds_the_books_one_line_per_difference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``reconcile --check --warehouse``: the Redis check's status and the warehouse's, one line per
    differing campaign-day; ``--warehouse`` alone is refused."""
    from click.testing import CliRunner

    import adplatform.cli.warehouse as cli_warehouse
    import budget.reconcile
    from adplatform.cli import main

    redis_status = [0]

    async def fake_reconcile(*_: object, **__: object) -> int:
        return redis_status[0]

    books = [_books()]
    monkeypatch.setattr(budget.reconcile, "run_reconcile", fake_reconcile)
    monkeypatch.setattr(cli_warehouse, "books_check", lambda _cfg: books[0])
    run = CliRunner().invoke
    ok = run(main, ["reconcile", "--check", "--warehouse"])
    assert ok.exit_code == 0, ok.output
    assert "warehouse: books add up: 3 campaign-days, spend 5.000000" in ok.output
    assert "not compared: 2025-10-20" in ok.output
    books[0] = _books(
        SpendDifference("c1", "2025-10-10", 10, 0, 0), SpendDifference("c2", "2025-10-11", 0, 7, 7)
    )
    bad = run(main, ["reconcile", "--check", "--warehouse"])
    assert bad.exit_code == 1
    lines = [line for line in bad.output.splitlines() if line.startswith("warehouse: 2025")]
    assert lines == [
        "warehouse: 2025-10-10 c1: ledger 10, feedback 0, campaign_day 0",
        "warehouse: 2025-10-11 c2: ledger 0, feedback 7, campaign_day 7",
    ]
    books[0], redis_status[0] = _books(), 1
    assert run(main, ["reconcile", "--check", "--warehouse"]).exit_code == 1  # Redis differs
    assert run(main, ["reconcile", "--warehouse"]).exit_code == 2
    as_json = json.loads(run(main, ["warehouse", "check", "--json"]).output)
    assert as_json["balanced"] and as_json["ledger_micros"] == 5_000_000
