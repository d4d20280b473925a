"""Pure parts of the archive: schema derivation, JDBC target, CSV output, the CLI's fast failures."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec

from adplatform.wire import FeedbackEvent
from archive.export import jdbc_target
from archive.feedback_writer import CORRUPT_TRIGGER_S, corrupt_trigger_s
from archive.schema import FEEDBACK_COLUMNS, REQUIRED_FIELDS
from archive.table import Table, rate, write_csv


def test_schema_follows_the_wire_struct() -> None:
    names = [f.name for f in msgspec.structs.fields(FeedbackEvent)]
    assert [c.name for c in FEEDBACK_COLUMNS] == names
    by_name = {c.name: c for c in FEEDBACK_COLUMNS}
    assert (by_name["auction_cpm"].precision, by_name["auction_cpm"].scale) == (24, 10)
    assert (by_name["expenditure_amount"].precision, by_name["expenditure_amount"].scale) == (20, 6)
    assert by_name["expenditure_micros"].kind == "long"
    assert by_name["user_action"].allowed == ("acquisition", "click", "view")
    assert "user_age" not in REQUIRED_FIELDS and "event_id" in REQUIRED_FIELDS


def test_jdbc_target_from_dsn() -> None:
    target = jdbc_target("postgresql://u%40x:s3cret@db.example:5433/ads?sslmode=require")
    assert target.url == "jdbc:postgresql://db.example:5433/ads?sslmode=require"
    assert (target.user, target.password) == ("u@x", "s3cret")
    assert "s3cret" not in repr(target)
    assert jdbc_target("postgresql://postgres@127.0.0.1:15432/adplatform").options()["driver"] == (
        "org.postgresql.Driver"
    )


def test_csv_keeps_money_exact_and_none_empty(tmp_path: Path) -> None:
    table = Table(
        "t", "T", ("k", "spend", "ctr"), (("a", Decimal("0.000001"), rate(1, 3)), ("b", Decimal(0), None))
    )
    text = write_csv(table, tmp_path).read_text()
    assert text.splitlines() == ["k,spend,ctr", f"a,0.000001,{1 / 3!r}", "b,0,"]


def test_report_on_an_empty_archive_fails_fast(tmp_path: Path, repo_root: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adplatform.cli", "report"],
        cwd=repo_root,
        env={"ADP_ARCHIVE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert b"no archived events" in done.stderr


def test_the_corrupt_query_triggers_at_most_every_30_s_and_never_before_the_feedback_query() -> None:
    assert CORRUPT_TRIGGER_S == 30.0
    assert corrupt_trigger_s(5.0) == corrupt_trigger_s(0.5) == 30.0
    assert corrupt_trigger_s(60.0) == 60.0
