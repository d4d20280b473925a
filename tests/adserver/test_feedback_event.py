"""The enriched ``ad-feedback`` event and its partition: what the feedback path remembers per campaign (the
campaign's fields, price Decimals, each key's partition) gives what it would compute each time."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer

from adserver.feedback import FeedbackBody, KeyPartitions, build_event
from adserver.token import RequestToken
from tests.index.index_factory import campaign

TOKEN = RequestToken(
    nonce="n1", campaign_id="c1", campaign_version=3, issued_ms=1_700_000_000_000, user_id="u1",
    clearing_cpm_units=17_500, auction_cpc_micros=660, auction_cpa_micros=52_900, user_age=30,
)  # fmt: skip


async def test_each_key_gets_the_partition_the_producer_would_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: its partitioner only
    rng = random.Random(7)
    partitions = KeyPartitions()
    for count in (1, 3, 4, 12, 3):  # a topic that grows, and shrinks back: nothing stale is kept
        ids = set(range(count))
        monkeypatch.setattr(producer._metadata, "partitions_for_topic", lambda topic, ids=ids: ids)
        monkeypatch.setattr(producer._metadata, "available_partitions_for_topic", lambda topic, ids=ids: ids)
        pick = partitions.of(ids)
        for _ in range(300):
            key = f"campaign-{rng.getrandbits(40):x}".encode()
            expected = producer._partition("ad-feedback", None, key, b"{}", key, b"{}")
            assert pick(key) == pick(key) == expected
    await producer.stop()


def test_the_event_carries_the_campaign_and_prices_each_time_alike() -> None:
    aged = campaign(campaign_id="c1", target_age_start=20, target_age_end=45, target_city="Pune",
                    target_state="Maharashtra", target_device="iPhone")  # fmt: skip
    body = FeedbackBody(view=1, click=1)
    for c in (aged, aged, campaign(campaign_id="c1"), None):
        event = build_event(TOKEN, "rid", "e1:click", "click", body, 660, c, 1_700_000_000_123)
        assert event.auction_cpm == Decimal("0.00000175") and event.auction_cpc == Decimal("0.000660")
        assert event.auction_cpa == Decimal("0.052900") and event.expenditure_amount == Decimal("0.000660")
        assert event.timestamp == "2023-11-14T22:13:20.123Z"
        if c is None:
            assert (event.target_age_range, event.target_location, event.campaign_start_time) == (
                "unknown", "unknown", ""
            )  # fmt: skip
            continue
        age = (
            "All"
            if c.target_age_start == c.target_age_end == 0
            else f"{c.target_age_start}-{c.target_age_end}"
        )
        assert event.target_age_range == age
        assert event.target_location == f"{c.target_city}, {c.target_state}, {c.target_country}"
        assert (event.target_gender, event.target_income_bucket, event.target_device_type) == (
            c.target_gender, c.target_income_bucket, c.target_device
        )  # fmt: skip
        assert event.campaign_start_time.endswith("Z") and event.campaign_end_time > event.campaign_start_time
