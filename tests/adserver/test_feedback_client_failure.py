"""Feedback when the Redis client fails in a way redis-py does not mean to (``AttributeError`` from its own
code, ``RedisClusterException``): a 503 with nothing charged, as in a Redis outage, never a 500. No Redis:
a fake budget store fails as the client did."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer
from redis.exceptions import RedisClusterException

from adserver.feedback import FeedbackError, FeedbackService
from adserver.token import TokenSigner
from budget.budget_redis import BudgetStore, Debit, DebitRequest
from index.pacing import ManualClock
from tests.adserver.test_fcap_gate import dropped_writer
from tests.adserver.test_token_issue import KEYS, TOKEN


class FailingBudgets:
    """The one ``BudgetStore`` method a debit batch calls, failing with ``fail``."""

    def __init__(self, fail: Callable[[], Awaitable[None]]) -> None:
        self._fail = fail
        self.calls = 0

    async def debit_many(
        self, requests: Sequence[DebitRequest], *, now_s: float, dedup_ttl_s: int
    ) -> list[Debit]:
        self.calls += 1
        await self._fail()
        raise AssertionError("the fake always fails")


async def _cluster_unreachable() -> None:
    raise RedisClusterException(
        "Redis Cluster cannot be connected. Please provide at least one reachable node"
    )


async def _bug_of_ours() -> None:
    raise AttributeError("'NoneType' object has no attribute 'campaign_id'")  # no redis-py frame


def _service(budgets: FailingBudgets) -> tuple[FeedbackService, str]:
    signer = TokenSigner(KEYS, ttl_s=60)
    service = FeedbackService(
        signer=signer,
        budgets=cast(BudgetStore, budgets),
        producer=cast(AIOKafkaProducer, object()),  # never reached: the debit fails first
        topic="ad-feedback",
        lookup=lambda cid: None,
        clock=ManualClock(TOKEN.issued_ms / 1000),
        dedup_ttl_s=3600,
    )
    return service, signer.issue(TOKEN)


async def _answers(service: FeedbackService, request_id: str, n: int) -> list[int]:
    out = []
    for result in await asyncio.gather(
        *(service.handle(request_id, b'{"click": 1}') for _ in range(n)), return_exceptions=True
    ):
        assert isinstance(result, FeedbackError), result
        out.append(result.status)
    return out


@pytest.mark.parametrize(
    "fail",
    [dropped_writer, _cluster_unreachable],
    ids=["attribute-error-inside-redis-py", "cluster-exception"],
)
async def test_a_failing_redis_client_answers_503_and_charges_nothing(
    fail: Callable[[], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    budgets = FailingBudgets(fail)
    service, request_id = _service(budgets)
    with caplog.at_level(logging.WARNING, logger="adserver.feedback"):
        assert await _answers(service, request_id, 3) == [503] * 3
        assert await _answers(service, request_id, 1) == [503]  # a second batch
    await service.aclose()
    assert budgets.calls == 2 and service.counters.unavailable == 4 and service.counters.accepted == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # A failure of the client itself leaves one traceback (not one per batch); a Redis error none.
    assert len(warnings) == (1 if fail is dropped_writer else 0)


async def test_a_bug_of_ours_is_still_a_500() -> None:
    service, request_id = _service(FailingBudgets(_bug_of_ours))
    assert await _answers(service, request_id, 2) == [500] * 2
    await service.aclose()
