"""bench.http prints every measured round with its p99 (its table keeps each case's best round only)."""

from __future__ import annotations

from bench.http import Measured, round_line
from bench.wrk import WrkResult


def test_a_round_line_carries_its_rate_p99_and_load() -> None:
    result = WrkResult(requests=38_034, duration_us=1_000_000, p50_us=1_460, p90_us=3_000, p99_us=8_024,
                       max_us=21_000, connect_errors=0, read_errors=0, write_errors=0, non_2xx=0,
                       timeouts=0)  # fmt: skip
    line = round_line(2, "uvicorn", "serve seed", Measured(result, 33.4, 2.46))
    assert line.startswith("round 2 uvicorn  serve seed ")
    assert line.endswith("38,034 req/s p99   8.02 ms (load 2.5)")
