"""Exact request counts on the real stack: ``adplatform serve --workers 2`` answers a mix of served, no-fill
and invalid requests; once it has stopped, ``ad-request-counts`` adds up to exactly what the clients saw,
per outcome, in contiguous windows of each worker."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from adplatform.config import Config
from adplatform.kafka import read_to_end
from adplatform.request_counts import RequestCounts, counts_decoder
from adserver.state import NO_ELIGIBLE_AD
from loadtest.workers import wait_workers_ready
from tests.admin.helpers import adserver
from tests.adserver.serving import campaign_row, ingest

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

WORKERS = 2
#: (query, expected status): Mumbai is targeted, Delhi is not, age=old is refused.
MIX = ((("city", "Mumbai"),), 200), ((("city", "Delhi"),), 404), ((("age", "old"),), 422)


async def test_two_workers_publish_exact_counts_of_every_outcome(topics: Config, tmp_path: Path) -> None:
    await ingest(topics, [campaign_row("counted", city="Mumbai")], tmp_path)
    statuses: Counter[int] = Counter()
    # 1 s windows: the requests spread over several windows of each worker.
    async with adserver(topics, tmp_path / "server.log", {"ADP_REQUEST_COUNT_INTERVAL_S": "1"}) as url:
        await wait_workers_ready(url, WORKERS, timeout_s=60, index_size=1)
        for round_no in range(6):
            # Fresh connections each round, so both workers answer some.
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:

                async def one(i: int) -> int:
                    params, _ = MIX[i % len(MIX)]
                    response = await client.get(f"/ad/user/c{i}/serve", params=dict(params))
                    return response.status_code

                statuses.update(await asyncio.gather(*(one(i) for i in range(round_no, round_no + 40))))
            await asyncio.sleep(0.4)
    assert set(statuses) == {200, 404, 422}, statuses  # the server stopped: its last windows are sent

    records: list[RequestCounts] = [
        counts_decoder.decode(r.value or b"")
        for r in await read_to_end(topics.kafka_bootstrap, topics.topics.request_counts)
    ]
    assert len({r.record_id for r in records}) == len(records)
    assert sum(r.served for r in records) == statuses[200]
    assert sum(r.no_fill for r in records) == statuses[404]
    assert sum(r.no_fill_reasons.get(NO_ELIGIBLE_AD, 0) for r in records) == statuses[404]
    assert sum(r.rejected for r in records) == statuses[422]
    assert sum(r.requests for r in records) == statuses[200] + statuses[404]
    assert sum(r.not_ready for r in records) == 0

    by_worker: dict[str, list[RequestCounts]] = defaultdict(list)
    for r in records:
        by_worker[r.worker].append(r)
    assert len(by_worker) == WORKERS, sorted(by_worker)
    for worker, mine in by_worker.items():
        mine.sort(key=lambda r: r.seq)
        assert [r.seq for r in mine] == list(range(len(mine))), worker
        # Windows of one worker follow each other without overlap.
        assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(mine)), worker
    assert len(records) > WORKERS  # several windows, not one per worker
