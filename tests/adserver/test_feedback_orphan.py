"""An orphaned charge: the debit ran (and replicated) but its answer was lost, so the feedback was answered
503 and nothing was published; the retry meets the de-duplication key. Here the lost answer is played by
debiting directly, as the lost call did; the key's remaining TTL says how long ago."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from adplatform import names
from adplatform.kafka import read_to_end
from adplatform.wire import feedback_decoder
from adserver.feedback import SUCCESS, FeedbackError, FeedbackService
from adserver.published import PublishedEvents
from adserver.token import digest
from index.pacing import SystemClock
from tests.adserver.serving import eventually
from tests.adserver.test_feedback_budget import CPC_MICROS, Rig, assert_conserved, feedback_events, rig

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

__all__ = ["rig"]  # the fixture, imported for this module's tests

#: The rig's ``dedup_ttl_s``.
RIG_DEDUP_TTL_S = 3600


async def _lost_answer(rig: Rig, cid: str, token: str, *, seconds_ago: int) -> str:
    """Debit ``token``'s click as the lost call did, ``seconds_ago`` (its key's TTL that much shorter)."""
    event_id = f"{digest(token)}:click"
    debit = await rig.budgets.debit(
        cid, event_id, CPC_MICROS, now_s=SystemClock().now(), dedup_ttl_s=RIG_DEDUP_TTL_S - seconds_ago
    )
    assert debit.charged_micros == CPC_MICROS
    return event_id


async def test_a_retry_publishes_an_orphaned_charge_once_it_is_old(rig: Rig, pg: asyncpg.Pool) -> None:
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user="orphan")
    charged_ms = int(SystemClock().now() * 1000) - 10_000
    event_id = await _lost_answer(rig, cid, token, seconds_ago=10)  # older than any worker's publish
    assert await rig.service.handle(token, b'{"click": 1}') == SUCCESS
    assert rig.service.counters.republished == 1
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS  # charged once, by the lost call
    events = [e for e in await feedback_events(rig.config) if e[0] == event_id]
    assert events == [(event_id, cid, CPC_MICROS)]  # the first charge's amount
    records = await read_to_end(rig.config.kafka_bootstrap, rig.config.topics.feedback)
    (copy,) = [
        e for e in (feedback_decoder.decode(r.value or b"") for r in records) if e.event_id == event_id
    ]
    assert abs(copy.timestamp_ms - charged_ms) < 2_000  # the first charge's time: it lands on its day
    await assert_conserved(rig, pg)  # the ledger books it; reconciliation finds nothing to repair


def _other_worker(
    rig: Rig, published: Callable[[dict[str, int]], Awaitable[set[str]]] | None
) -> FeedbackService:
    """A second worker of the same host: the same Redis and producer, a feedback service of its own."""
    return FeedbackService(
        signer=rig.signer,
        budgets=rig.budgets,
        producer=rig.producer,
        topic=rig.config.topics.feedback,
        lookup=rig.campaigns.get,
        clock=SystemClock(),
        dedup_ttl_s=RIG_DEDUP_TTL_S,
        publish_timeout_s=1,
        published=published,
    )


async def _retried_on_another_worker(rig: Rig, token: str) -> FeedbackService:
    """The click of ``token`` sent again to a second worker that looks orphans up in ``ad-feedback``:
    answered 200; that worker, for its counters."""
    published = PublishedEvents(rig.config.kafka_bootstrap, rig.config.topics.feedback)
    other = _other_worker(rig, published)
    try:
        assert await other.handle(token, b'{"click": 1}') == SUCCESS
    finally:
        await published.aclose()
    return other


async def test_a_quick_retry_of_a_charge_whose_worker_died_before_publishing_is_published(
    rig: Rig, pg: asyncpg.Pool
) -> None:
    """The first's worker debited and died before the publish; the retry reaches another worker at once.
    It waits out the publish window (a first still in flight would be published or refunded by then),
    finds no event in ad-feedback and publishes it, once, with the first charge's amount."""
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user="young")
    charged_ms = int(SystemClock().now() * 1000)
    event_id = await _lost_answer(rig, cid, token, seconds_ago=0)
    started = time.monotonic()
    other = await _retried_on_another_worker(rig, token)
    assert time.monotonic() - started >= 2.0  # publish_timeout_s 1 + ORPHAN_MARGIN_S 1
    assert other.counters.republished == 1
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == [(event_id, cid, CPC_MICROS)]
    records = await read_to_end(rig.config.kafka_bootstrap, rig.config.topics.feedback)
    (copy,) = [
        e for e in (feedback_decoder.decode(r.value or b"") for r in records) if e.event_id == event_id
    ]
    assert abs(copy.timestamp_ms - charged_ms) < 1_500  # the first charge's time, not the retry's
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS  # charged once, by the lost call
    await assert_conserved(rig, pg)


async def test_a_quick_retry_of_an_acknowledged_charge_on_another_worker_publishes_no_copy(rig: Rig) -> None:
    """The first was published and acknowledged but its answer was lost: the retry on another worker
    waits out the window, finds the event in ad-feedback and answers 200 without a copy; a duplicate in
    the first's own worker is answered at once."""
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user="acked")
    event_id = f"{digest(token)}:click"
    assert await rig.service.handle(token, b'{"click": 1}') == SUCCESS
    started = time.monotonic()
    assert await rig.service.handle(token, b'{"click": 1}') == SUCCESS
    assert time.monotonic() - started < 1.0  # the first's worker knows it was acknowledged
    other = await _retried_on_another_worker(rig, token)
    assert other.counters.republished == 0
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == [(event_id, cid, CPC_MICROS)]
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS


def _slow_worker(rig: Rig, slow: _SlowProducer) -> FeedbackService:
    """A worker whose events go to ``slow`` and whose publish deadline is 0.2 s."""
    return FeedbackService(
        signer=rig.signer,
        budgets=rig.budgets,
        producer=cast(AIOKafkaProducer, slow),
        topic=rig.config.topics.feedback,
        lookup=rig.campaigns.get,
        clock=SystemClock(),
        dedup_ttl_s=RIG_DEDUP_TTL_S,
        publish_timeout_s=0.2,
    )


class _SlowProducer:
    """Takes every event and answers none until the test does: a leader election in progress."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[object]] = []
        #: What each send was given: (value, key).
        self.sent: list[tuple[bytes, bytes | None]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        self.sent.append((value, key))
        return ack


async def test_an_event_kafka_has_not_answered_keeps_its_charge_and_a_retry_waits_for_the_answer(
    rig: Rig,
) -> None:
    """The event was handed to Kafka and not acknowledged in time: it may still be written, so its charge
    stays, marked in flight, and a retry on another worker is answered 503 without a debit or a publish
    (before, the charge was refunded and the retry charged and published the event id a second time).
    When Kafka answers (here: it failed), the charge is refunded and the mark goes: the retry is then
    charged and published once."""
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user="slow")
    event_id = f"{digest(token)}:click"
    slow = _SlowProducer()
    first = _slow_worker(rig, slow)
    with pytest.raises(FeedbackError) as refused:
        await first.handle(token, b'{"click": 1}')
    assert refused.value.status == 503
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS  # kept: the event may still land
    other = _other_worker(rig, None)
    started = time.monotonic()
    with pytest.raises(FeedbackError) as again:
        await other.handle(token, b'{"click": 1}')
    assert again.value.status == 503 and time.monotonic() - started < 1.0  # at once, nothing published
    slow.acks[0].set_exception(KafkaTimeoutError())  # Kafka answers late: not written

    async def refunded() -> bool:
        return (await rig.budgets.get(cid)).get("spent", 0) == 0 and not await rig.redis.exists(
            names.dedup_key(cid, event_id) + ":in-flight"
        )

    await eventually(refunded, timeout_s=5, poll_s=0.05)
    await first.aclose()
    assert await other.handle(token, b'{"click": 1}') == SUCCESS  # a fresh charge now
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == [(event_id, cid, CPC_MICROS)]
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS


@pytest.mark.parametrize("written", [True, False], ids=["written before the leader died", "never written"])
async def test_a_batch_the_producer_gave_up_after_a_leader_change_keeps_its_charge(
    rig: Rig, pg: asyncpg.Pool, written: bool
) -> None:
    """The event was handed to Kafka and not acknowledged in time; then the producer gave its batch up
    with ``NotLeaderForPartitionError`` (it outlived the request timeout with no leader to retry on).
    The leader may have written it before it died, so the charge stays and only the in-flight mark goes.
    The retry on another worker waits out the window and looks the event up: written, it is answered
    200 with no copy (before, the refund let the retry charge and publish the event id a second time: the
    cluster's ``kill-kafka-leader`` scenario found 14 such copies in the archive); not written, it is
    published once, with the first charge's amount."""
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user=f"leader-{written}")
    event_id = f"{digest(token)}:click"
    mark = names.dedup_key(cid, event_id) + ":in-flight"
    slow = _SlowProducer()
    first = _slow_worker(rig, slow)
    with pytest.raises(FeedbackError) as refused:
        await first.handle(token, b'{"click": 1}')
    assert refused.value.status == 503 and await rig.redis.exists(mark)
    if written:  # the old leader wrote it (and its followers copied it) before it died
        value, key = slow.sent[0]
        await rig.producer.send_and_wait(rig.config.topics.feedback, value, key=key)
    slow.acks[0].set_exception(NotLeaderForPartitionError())

    async def unmarked() -> bool:
        return not await rig.redis.exists(mark)

    await eventually(unmarked, timeout_s=5, poll_s=0.05)
    await first.aclose()
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS  # kept, not refunded
    other = await _retried_on_another_worker(rig, token)
    assert other.counters.republished == (0 if written else 1)
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == [(event_id, cid, CPC_MICROS)]
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    await assert_conserved(rig, pg)


async def _unreadable(since: dict[str, int]) -> set[str]:
    """``ad-feedback`` during a leader election: the look-up's time bound runs out."""
    raise TimeoutError


@pytest.mark.parametrize("written", [True, False], ids=["first in the log", "first never published"])
async def test_an_orphan_whose_log_cannot_be_read_is_answered_503_and_not_copied(
    rig: Rig, pg: asyncpg.Pool, written: bool
) -> None:
    """The retry of an old charge meets an ``ad-feedback`` it cannot read (a leader election, as the
    cluster's ``kill-kafka-leader`` scenario: 8 copies in the archive when such retries were published
    again). Its first may be in the log, so it is answered 503 and nothing is published; the charge stays.
    The next retry, once the log can be read, settles it: 200 without a copy when the first is there, the
    first charge published once when it is not."""
    cid = next(iter(rig.campaigns))
    token = rig.token(cid, user=f"unreadable-{written}")
    if written:  # published and acknowledged, its answer lost
        event_id = f"{digest(token)}:click"
        assert await rig.service.handle(token, b'{"click": 1}') == SUCCESS
    else:  # debited, and its worker died before the publish, long enough ago
        event_id = await _lost_answer(rig, cid, token, seconds_ago=10)
    blind = _other_worker(rig, _unreadable)
    if written:  # its charge as old as the orphan window: the look-up is asked at once
        await rig.redis.expire(names.dedup_key(cid, event_id), RIG_DEDUP_TTL_S - 10)
    with pytest.raises(FeedbackError) as refused:
        await blind.handle(token, b'{"click": 1}')
    assert refused.value.status == 503 and "event log unavailable (TimeoutError)" in str(refused.value)
    assert blind.counters.republished == 0
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == (
        [(event_id, cid, CPC_MICROS)] if written else []
    )
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS  # kept: it is the first's
    other = await _retried_on_another_worker(rig, token)
    assert other.counters.republished == (0 if written else 1)
    assert [e for e in await feedback_events(rig.config) if e[0] == event_id] == [(event_id, cid, CPC_MICROS)]
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    await assert_conserved(rig, pg)
