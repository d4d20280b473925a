"""``/metrics`` of a 2-worker ad server is the sum over its workers, on every scrape."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adplatform.config import Config
from adserver.http.metrics import FLUSH_INTERVAL_S
from loadtest.workers import wait_workers_ready
from tests.adserver.serving import campaign_row, ingest
from tests.adserver.test_workers_stack import WORKERS, server  # noqa: F401  # the 2-worker server fixture

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

SERVE_ROUTE = "/ad/user/{user_id}/serve"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A fresh connection each time: the kernel spreads connections over the workers' shared socket.
    response = await client.get("/metrics", headers={"connection": "close"})
    assert response.status_code == 200
    return _samples(response.text)


def _served(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], status: str) -> float:
    return samples.get(("adserver_http_requests_total", (("route", SERVE_ROUTE), ("status", status))), 0.0)


async def test_request_counter_rises_by_exactly_n_on_every_scrape(
    server: str,  # noqa: F811
    topics: Config,
    tmp_path: Path,
) -> None:
    await ingest(topics, [campaign_row("m1", device="iPhone")], tmp_path)
    await wait_workers_ready(server, WORKERS, timeout_s=60, index_size=1)
    async with httpx.AsyncClient(base_url=server) as client:
        await asyncio.sleep(FLUSH_INTERVAL_S * 2)
        before = await _scrape(client)
        n_served, n_unfilled = 300, 100

        async def one(device: str) -> int:
            response = await client.get("/ad/user/u1/serve", params={"device_type": device},
                                        headers={"connection": "close"})  # fmt: skip
            return response.status_code

        statuses = await asyncio.gather(
            *(one("iPhone") for _ in range(n_served)), *(one("Macbook") for _ in range(n_unfilled))
        )
        assert statuses.count(200) == n_served and statuses.count(404) == n_unfilled
        await asyncio.sleep(FLUSH_INTERVAL_S * 2.5)  # every worker has flushed since
        pids: set[str] = set()
        for _ in range(8):
            after = await _scrape(client)
            assert _served(after, "200") - _served(before, "200") == n_served
            assert _served(after, "404") - _served(before, "404") == n_unfilled
            key = ("adserver_serve_requests_total", (("outcome", "served"),))
            assert after[key] - before.get(key, 0.0) == n_served
            assert (
                after[("adserver_ads_served_total", ())] - before.get(("adserver_ads_served_total", ()), 0)
                == n_served
            )
            pids |= {dict(labels)["pid"] for name, labels in after if name == "adserver_worker_info"}
        # Both workers' series are in every scrape (liveall gauge: one per live worker), and both served.
        assert len(pids) == WORKERS
