"""Publishes every served ad to ``served-ads`` in the background: serving never waits on Kafka.

The serve route calls ``offer``; ``adserver.sync.shipper.BatchShipper`` lingers 50 ms so items accumulate,
encodes them into records of up to ``SERVED_ADS_PER_RECORD`` ``ServedAd`` objects each (JSON Lines: every
object followed by a newline; ``adplatform.wire.decode_served`` reads them, and a one-object record without
the newline as written before) and hands them to librdkafka, which ships them as record batches on its own
threads; deliveries are counted from its reports.

Why several per record: every consumer pays per record (aiokafka parses each in Python), so the
served-writer drains ~1.5× the ads per second at 0.78× the Python CPU per ad; the producer builds and the
broker validates one record per 64 ads (~1 µs of broker CPU less per ad) (BENCHMARKS.md).

Degradation policy: the queue is bounded; when Kafka is slow or down and the queue is full, new items are
dropped and counted (``adserver_served_ads_dropped_total``) rather than slowing serving down. The served
ads are an audit trail, not money: charges come from feedback, which has its own guarantees.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Final

import msgspec

from adplatform.config import Config
from adplatform.wire import SERVED_ADS_PER_RECORD, ServedAd, encode_served
from adserver.sync.shipper import BatchShipper
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.targeting import AdRequest


class ServedItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the serve route hands over for one served ad; encoded later, off the request's path.

    Built once per served ad, by keyword (four adjacent ints). A keyword-only Struct builds in ~90 ns
    where a ``NamedTuple`` called with keywords takes ~600 ns; ``gc=False`` because it never holds a
    cycle, and up to ``max_queue`` of them wait in the queue.
    """

    request_id: str
    campaign_id: str
    served_at_ms: int
    clearing_cpm_units: int
    auction_cpc_micros: int
    auction_cpa_micros: int
    #: Bids that set the price: the top group, plus the runner-up when it priced a lone winner.
    bidders: int
    request: AdRequest


#: Prices whose Decimal is kept, per unit, at most (emptied when full: bounded memory).
MAX_DECIMALS: Final = 65_536


class _Decimals:
    """Decimals of prices seen before: bids lie on a grid, so an auction's prices repeat, and building a
    Decimal cost a third of encoding a served ad (Decimals are immutable: sharing one is safe)."""

    __slots__ = ("_convert", "_known")

    def __init__(self, convert: Callable[[int], Decimal]) -> None:
        self._convert = convert
        self._known: dict[int, Decimal] = {}

    def __call__(self, value: int) -> Decimal:
        known = self._known.get(value)
        if known is None:
            if len(self._known) >= MAX_DECIMALS:
                self._known.clear()
            known = self._known[value] = self._convert(value)
        return known


_cpm_decimal = _Decimals(cpm_units_to_decimal)
_micros_decimal = _Decimals(micros_to_decimal)


def served_ad(item: ServedItem) -> ServedAd:
    r = item.request
    return ServedAd(
        request_id=item.request_id,
        campaign_id=item.campaign_id,
        user_id=r.user_id,
        served_at_ms=item.served_at_ms,
        auction_cpm=_cpm_decimal(item.clearing_cpm_units),
        auction_cpc=_micros_decimal(item.auction_cpc_micros),
        auction_cpa=_micros_decimal(item.auction_cpa_micros),
        bidders=item.bidders,
        device_type=r.device_type,
        city=r.city,
        state=r.state,
        country=r.country,
        age=r.age,
        gender=r.gender,
        income_bucket=r.income_bucket,
    )


class ServedAdPublisher(BatchShipper[ServedItem]):
    """A bounded queue of served ads and the one task that ships them to ``served-ads``."""

    def __init__(self, config: Config, *, max_queue: int = 50_000, linger_s: float = 0.05) -> None:
        super().__init__(
            config,
            topic=config.topics.served_ads,
            client_id="adserver-served",
            max_queue=max_queue,
            linger_s=linger_s,
            # A record (one ``encode_served`` call, ~80 µs for 64 ads) is the flush's unit of work between two
            # yields to the requests (``shipper.YIELD_EVERY``); consumers size their polls by the same count.
            per_record=SERVED_ADS_PER_RECORD,
        )

    def _encode(self, items: list[ServedItem]) -> bytes:
        return encode_served([served_ad(item) for item in items])
