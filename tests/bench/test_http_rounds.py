"""bench.http prints every measured round with its p99 (its table keeps each case's best round only)."""

from __future__ import annotations

from bench.http import NGINX, NGINX_CASE, Measured, add_round_ratios, round_line
from bench.wrk import WrkResult


def test_a_round_line_carries_its_rate_p99_and_load() -> None:
    result = WrkResult(requests=38_034, duration_us=1_000_000, p50_us=1_460, p90_us=3_000, p99_us=8_024,
                       max_us=21_000, connect_errors=0, read_errors=0, write_errors=0, non_2xx=0,
                       timeouts=0)  # fmt: skip
    line = round_line(2, "uvicorn", "serve seed", Measured(result, 33.4, 2.46))
    assert line.startswith("round 2 uvicorn  serve seed ")
    assert line.endswith("38,034 req/s p99   8.02 ms (load 2.5)")
    own = round_line(2, "uvicorn", "serve seed", Measured(result, 33.4, 2.46, 1.0, 2.126))
    assert own.endswith("(load 2.5, served ads published 100.00%, the server's own p99 2.13 ms)")


def test_each_row_gets_its_ratio_to_nginx_of_the_same_round_and_their_median() -> None:
    rows: list[dict[str, object]] = [
        {"case": NGINX_CASE, "server": NGINX},
        {"case": "serve seed", "server": "uvicorn"},
        {"case": "minimal starlette", "server": "uvicorn"},
    ]
    by_round = {
        (NGINX_CASE, NGINX): [200_000.0, 160_000.0, 250_000.0],
        ("serve seed", "uvicorn"): [60_000.0, 56_000.0, 62_500.0],
    }
    add_round_ratios(rows, by_round[(NGINX_CASE, NGINX)], by_round)
    assert "nginx_ratio_by_round" not in rows[0]  # nginx over itself says nothing
    assert rows[1]["nginx_ratio_by_round"] == [0.3, 0.35, 0.25]
    assert rows[1]["nginx_ratio_median"] == 0.3  # where the best rounds alone give 62,500 / 250,000 = 0.25
    assert "nginx_ratio_by_round" not in rows[2]  # not measured in these rounds
