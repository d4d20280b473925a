"""A feedback batch waits for every event's acknowledgement, whatever order the producer settles them in:
each request is answered 200 only once its own event is acknowledged (no stack: fake budgets, a producer
whose acknowledgements the test settles one by one)."""

from __future__ import annotations

import asyncio
from typing import Any

from adplatform.config import load_config
from adserver.feedback import SUCCESS
from adserver.token import RequestToken, TokenSigner
from tests.adserver.test_direct_feedback import NOW_MS, FakeBudgets, faked_service


class HeldProducer:
    """Each campaign's events go to their own partition; every acknowledgement waits for the test."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None) -> asyncio.Future[Any]:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_each_request_waits_for_its_own_acknowledgement() -> None:
    config = load_config({})
    signer = TokenSigner(config.token_keys, ttl_s=config.token_ttl_s)
    producer = HeldProducer()
    service = faked_service(signer, FakeBudgets(), producer)
    request_ids = [
        signer.issue(
            RequestToken(
                nonce=f"n{i}",
                campaign_id=f"c{i % 2}",
                campaign_version=1,
                issued_ms=NOW_MS,
                user_id="u1",
                clearing_cpm_units=17_500,
                auction_cpc_micros=100,
                auction_cpa_micros=2_000,
            )
        )
        for i in range(6)
    ]
    answers = [service.submit(rid, b'{"click": 1}') for rid in request_ids]
    await settle()
    assert len(producer.acks) == 6  # one batch, every event handed over
    # Settle the last event of each campaign first, then the others one at a time.
    order = [5, 4, 0, 3, 1, 2]
    for n, i in enumerate(order):
        producer.acks[i].set_result(None)
        await settle()
        done = {j for j, answer in enumerate(answers) if answer.done()}
        assert done <= set(order[: n + 1])  # nobody answered before their own acknowledgement
    assert [answer.result() for answer in answers] == [SUCCESS] * 6
    assert service.counters.accepted == 6
    await service.aclose()
