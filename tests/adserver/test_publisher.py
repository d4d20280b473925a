"""The served-ads publisher without Kafka: serving never waits, a full queue drops and counts, what Kafka
never took is counted failed; its batches are compressed (the stack tests read them back)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest
from aiokafka.codec import has_snappy
from hypothesis import given
from hypothesis import strategies as st

from adplatform.config import load_config
from adplatform.wire import served_decoder
from adserver.sync.publisher import ServedAdPublisher, ServedItem, _cpm_decimal, _micros_decimal, served_ad
from adserver.sync.sampler import RequestSampler
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.targeting import AdRequest

REQUEST = AdRequest(
    user_id="u1", device_type="iPhone", city="Pune", state="Maharashtra", country="India", age=30
)
ITEM = ServedItem(
    request_id="rid",
    campaign_id="c1",
    served_at_ms=1_700_000_000_123,
    clearing_cpm_units=1_234_567,
    auction_cpc_micros=660,
    auction_cpa_micros=52_900,
    bidders=2,
    request=REQUEST,
)


def test_served_ad_carries_the_auction_exactly() -> None:
    ad = served_ad(ITEM)
    assert (ad.request_id, ad.campaign_id, ad.user_id, ad.served_at_ms, ad.bidders) == (
        "rid", "c1", "u1", 1_700_000_000_123, 2
    )  # fmt: skip
    assert (ad.auction_cpm, ad.auction_cpc, ad.auction_cpa) == (
        Decimal("0.0001234567"), Decimal("0.000660"), Decimal("0.052900")
    )  # fmt: skip
    assert (ad.city, ad.age, ad.gender) == ("Pune", 30, None)
    from adplatform.wire import encoder

    assert served_decoder.decode(encoder.encode(ad)) == ad


async def test_unreachable_kafka_drops_instead_of_blocking(caplog: pytest.LogCaptureFixture) -> None:
    # Port 9 (discard) is not the stack's: nothing answers there.
    config = replace(load_config(), kafka_bootstrap="127.0.0.1:9")
    publisher = ServedAdPublisher(config, max_queue=10)
    task = asyncio.create_task(publisher.run())
    for _ in range(15):
        publisher.offer(ITEM)  # returns at once, connected or not
    assert (len(publisher), publisher.dropped) == (10, 5)
    await asyncio.sleep(0.5)
    # Handed to librdkafka, which holds them for Kafka: still waiting to be published (the queued gauge).
    assert (len(publisher._items), len(publisher)) == (0, 10)
    publisher.stop()
    # Kafka is known unreachable: stopping gives up on the ten at once, counted failed.
    await asyncio.wait_for(task, 5)
    assert (len(publisher), publisher.dropped, publisher.failed, publisher.sent) == (0, 5, 10, 0)
    outage = [r.getMessage() for r in caplog.records if "Kafka unreachable" in r.getMessage()]
    assert len(outage) == 1, outage  # one line for the outage, not one per reconnection


@given(st.lists(st.integers(min_value=0, max_value=10**15), max_size=50))
def test_remembered_price_decimals_are_the_exact_ones(values: list[int]) -> None:
    for value in values + values:  # the second pass reads what the first remembered
        assert str(_cpm_decimal(value)) == str(cpm_units_to_decimal(value))
        assert str(_micros_decimal(value)) == str(micros_to_decimal(value))


def test_both_streams_go_to_kafka_snappy_compressed_idempotent_acks_all() -> None:
    """The served ads' and request samples' producer compresses its record batches (the consumers'
    stack tests read them back) and keeps the house guarantees."""
    config = load_config()
    for stream in (ServedAdPublisher(config), RequestSampler(config)):
        settings = stream.producer_settings()
        assert settings["compression.type"] == "snappy"
        assert (settings["acks"], settings["enable.idempotence"]) == ("all", True)
        assert settings["bootstrap.servers"] == config.kafka_bootstrap
    assert has_snappy()  # cramjam is installed with the consumers
