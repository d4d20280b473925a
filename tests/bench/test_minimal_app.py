"""The benches' minimal reference app answers both URLs it stands in for, and the feedback bench's rows carry
their ratio to its like-for-like POST reference."""

from __future__ import annotations

import httpx

from adserver.feedback import SUCCESS
from bench.feedback_http import median_row, ratio_to_post
from bench.minimal_app import app
from bench.wrk import WrkResult


async def test_the_minimal_app_answers_the_serve_get_and_the_feedback_post() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        served = await client.get("/ad/user/u1/serve")
        assert served.status_code == 200 and served.json()["campaign_id"]
        url = "/ad/dev1.some-request-id/feedback"
        answered = await client.post(url, content=b'{"view": 1, "click": 1}')
        assert answered.status_code == 200
        assert answered.content == SUCCESS  # the ad server's 200 body, byte for byte
        assert (await client.get(url)).status_code == 405


def _wrk(rps: int) -> WrkResult:
    """``rps`` requests over one second."""
    return WrkResult(requests=rps, duration_us=1_000_000, p50_us=1000, p90_us=3000, p99_us=5000, max_us=9000,
                     connect_errors=0, read_errors=0, write_errors=0, non_2xx=0, timeouts=0)  # fmt: skip


def _round(n: int, rps: int, post: int) -> dict[str, object]:
    fields: dict[str, object] = {
        "case": f"feedback #{n}",
        "requests_per_s": rps,
        "p50_ms": 4.0,
        "p99_ms": 9.0,
    }
    fields |= {"non_2xx": 0, "errors": 0, "ratio_to_minimal": round(rps / 30_000, 3)}
    return ratio_to_post(fields, _wrk(post))


def test_feedback_rows_carry_their_ratio_to_the_post_reference_and_its_median() -> None:
    rounds = [_round(1, 13_000, 26_000), _round(2, 14_000, 28_000), _round(3, 12_000, 30_000)]
    assert [r["ratio_to_minimal_post"] for r in rounds] == [0.5, 0.5, 0.4]
    median = median_row("feedback", rounds)
    assert median["ratio_to_minimal_post"] == 0.5
    assert median["ratio_to_minimal"] == round(13_000 / 30_000, 3)
    assert "ratio_to_baseline" not in median
