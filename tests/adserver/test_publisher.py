"""The served-ads publisher without Kafka: serving never waits, a full queue drops and counts; its batches
are compressed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_snappy
from aiokafka.errors import KafkaConnectionError
from hypothesis import given
from hypothesis import strategies as st

from adplatform.config import Config, load_config
from adplatform.wire import served_decoder
from adserver.sync import shipper
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


async def test_unreachable_kafka_drops_instead_of_blocking() -> None:
    # Port 9 (discard) is not the stack's: nothing answers there.
    config = replace(load_config(), kafka_bootstrap="127.0.0.1:9")
    publisher = ServedAdPublisher(config, max_queue=10)
    task = asyncio.create_task(publisher.run())
    for _ in range(15):
        publisher.offer(ITEM)  # returns at once, connected or not
    assert (len(publisher), publisher.dropped) == (10, 5)
    await asyncio.sleep(0.2)
    publisher.stop()
    await asyncio.wait_for(task, 5)
    assert (len(publisher), publisher.dropped, publisher.sent) == (0, 15, 0)


@given(st.lists(st.integers(min_value=0, max_value=10**15), max_size=50))
def test_remembered_price_decimals_are_the_exact_ones(values: list[int]) -> None:
    for value in values + values:  # the second pass reads what the first remembered
        assert str(_cpm_decimal(value)) == str(cpm_units_to_decimal(value))
        assert str(_micros_decimal(value)) == str(micros_to_decimal(value))


async def test_both_streams_go_to_kafka_snappy_compressed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The served ads' and request samples' producer compresses its record batches (the consumers'
    stack tests read them back)."""
    made: list[dict[str, object]] = []

    def capture(config: Config, **options: object) -> AIOKafkaProducer:
        made.append(options)
        raise KafkaConnectionError("not connecting in this test")

    monkeypatch.setattr(shipper, "make_producer", capture)
    config = load_config()
    for stream in (ServedAdPublisher(config), RequestSampler(config)):
        with pytest.raises(KafkaConnectionError):
            await stream.run()
    assert [m["compression_type"] for m in made] == ["snappy", "snappy"]
    assert has_snappy()  # cramjam is installed with the server
