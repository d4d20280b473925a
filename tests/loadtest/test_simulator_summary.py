"""The simulator's summary (rates, percentiles) and its open loop, against a small server of our own."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from loadtest.simulator import SimSummary, Simulator, SimUser, format_summary, percentile
from tests.loadtest.fake_http import body_length


def test_percentile_is_the_nearest_rank_from_below() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order does not matter
    assert percentile(list(reversed(values)), 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0 and percentile(values, 0.0) == 1.0
    assert percentile([], 0.99) == 0.0 and percentile([7.0], 0.99) == 7.0


def test_summary_shows_configured_and_achieved_rate_and_the_percentiles() -> None:
    s = SimSummary(requests=1000, answered=990, served=900, feedback_sent=900, feedback_ok=900, rate=200)
    s.elapsed_s = 5.0
    s.serve_ms = [float(v) for v in range(1, 101)]
    s.feedback_ms = [2.0 * v for v in range(1, 101)]
    s.send_lag_ms = [0.5] * 99 + [40.0]
    assert s.achieved_rate == pytest.approx(198.0)
    text = format_summary(s, spend="1.5")
    assert "rate            configured 200/s, achieved 198.0/s (answered)" in text
    assert "serve latency   p50 51.0 ms  p99 100.0 ms" in text
    assert "feedback lat.   p50 102.0 ms  p99 200.0 ms" in text
    assert "simulator lag   p50 0.5 ms  p99 40.0 ms" in text
    assert "requests              1000   (200/s)" in text
    assert SimSummary().achieved_rate == 0.0


async def test_open_loop_sends_every_scheduled_request_however_slow_the_answers() -> None:
    # A server that answers serve only after 0.3 s: a closed loop of 2 users would send ~13 in 2 s, the
    # open loop sends all 40 (20/s for 2 s).
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                await reader.readexactly(body_length(head))
                if "/serve" in head.split("\r\n")[0]:
                    await asyncio.sleep(0.3)
                    body = orjson.dumps({"request_id": "r1"})
                else:
                    body = b"{}"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        users = [SimUser("u1", 30, "iPhone")]
        sim = Simulator(users, ad_url=f"http://127.0.0.1:{port}", rate=20, concurrency=64, seed=1)
        s = await sim.run(2.0)
    finally:
        server.close()
    assert (s.requests, s.answered, s.served, s.feedback_ok, s.errors) == (40, 40, 40, 40, 0)
    assert len(s.serve_ms) == len(s.send_lag_ms) == len(s.feedback_ms) == 40
    assert s.rate == 20 and s.achieved_rate > 0
