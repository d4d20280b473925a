"""`make demo` as a smoke test: the whole pipeline for a short simulation, and its conservation line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.single_node(reason="the demo keeps a Redis logical database until `make demo-down`"),
]


def test_demo_runs_end_to_end_and_the_books_balance() -> None:
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest.demo",
                "--duration",
                "10",
                "--campaigns",
                "1500",
                "--users",
                "300",
                "--warm-up",  # the warm-up's path, briefly (by default: 45 s behind a broker just started)
                "2",
                "--port",  # not 8000: a developer's machine may run something there
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:  # `make demo-down`: the demo's database and Redis database are kept until then
        down = subprocess.run(
            [sys.executable, "-m", "loadtest.demo", "--down"], capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert re.search(r"^kept\s+database \S+_demo, Redis database \d+", result.stdout, re.M), result.stdout
    assert "dropped: the demo database, Redis database" in down.stdout, down.stdout + down.stderr
    # The run's directory (campaign file, archive, warehouse, report) goes too; earlier runs' went when
    # this one started.
    assert re.search(r"^removed: 1 demo run directory \(\d+\.\d MB\)$", down.stdout, re.M), down.stdout
    report = re.search(r"^report\s+(\S+report\.html)$", result.stdout, re.M)
    assert report is not None, result.stdout
    run_dir = Path(report.group(1)).parents[3]  # .stack/demo/demo<time>/archive/reports/<time>/
    assert run_dir.parent.name == "demo" and not run_dir.exists(), run_dir
    out = result.stdout
    line = next(row for row in out.splitlines() if row.startswith("conservation"))
    amounts = re.findall(r"(?:ledger|redis|archive|warehouse) (\d+\.\d{6})", line)
    assert len(amounts) == 4 and len(set(amounts)) == 1 and line.endswith("OK"), line
    assert re.search(r"^    books add up: \d+ campaign-days", out, re.M), out
    served = int(re.search(r"^served\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    rows = re.search(
        r"^served_ads rows\s+(\d+)\s+\(200 responses seen: (\d+), (\d+) of them while warming up\)", out, re.M
    )
    assert rows is not None and int(rows.group(1)) == int(rows.group(2)) == served + int(rows.group(3))
    assert served > 0 and int(rows.group(3)) > 0
    assert re.search(r"^==> warming up: .*simulating users for 2s, not measured$", out, re.M), out
    assert re.search(r"^report\s+\S+report\.html$", out, re.M)
    stages = (
        r"^feedback stages per batch of [\d.]+ requests \(means\): "
        r"gate [\d.]+ ms, debit [\d.]+ ms, publish [\d.]+ ms; "
        r"p99 gate [\d.]+ ms, debit [\d.]+ ms, publish [\d.]+ ms$"
    )
    assert re.search(stages, out, re.M), out
    # The ad server's own p99s beside the simulator's: the server's share of each tail.
    assert re.search(r"^server side\s+serve p99 [\d.]+ ms  feedback p99 [\d.]+ ms  \(", out, re.M), out
    # The stack's Redis runs its latency monitor: the disk's share of feedback's tail is printed.
    event = r"\S+ in \d+ s \(worst \d+ ms\)"
    stalls = rf"^redis\s+Redis stalls >= 5 ms in \d+ s: (none|{event}(, {event})*)$"
    assert re.search(stalls, out, re.M), out
