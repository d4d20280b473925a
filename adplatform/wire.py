"""Wire formats of the topics, as msgspec Structs with encoders and decoders built once.

``ad-changes`` carries ``index.campaign.Campaign`` (re-exported as ``AdChange``). A ``served-ads`` record
carries up to ``SERVED_ADS_PER_RECORD`` ``ServedAd`` objects as JSON Lines (``encode_served``,
``decode_served``). Money on the wire is an exact decimal JSON number (``Decimal`` fields, encoded as
numbers) next to its integer micro-units, so Spark and people read amounts while the books add up in
integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from index.campaign import Campaign

AdChange = Campaign
UserAction = Literal["view", "click", "acquisition"]


class ServedAd(msgspec.Struct, frozen=True, kw_only=True):
    """One ad served (topic ``served-ads``): the auction's outcome and the request's attributes."""

    request_id: str
    campaign_id: str
    user_id: str
    served_at_ms: int
    auction_cpm: Decimal
    auction_cpc: Decimal
    auction_cpa: Decimal
    bidders: int
    device_type: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    age: int | None = None
    gender: str | None = None
    income_bucket: str | None = None


class FeedbackEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One charged (or free) user action (topic ``ad-feedback``): the original archive's fields and more.

    ``event_id`` (request id digest + action) is unique per charge: the ledger and the archive de-duplicate
    on it, so an event delivered twice is counted once.
    """

    event_id: str
    campaign_id: str
    user_id: str
    request_id: str
    auction_cpm: Decimal
    auction_cpc: Decimal
    auction_cpa: Decimal
    target_age_range: str
    target_location: str
    target_gender: str
    target_income_bucket: str
    target_device_type: str
    campaign_start_time: str
    campaign_end_time: str
    expenditure_amount: Decimal
    expenditure_micros: int
    user_action: UserAction
    timestamp: str
    timestamp_ms: int
    click: int
    view: int
    acquisition: int
    # The request's user, for reports by age bucket, gender, device type and city.
    user_age: int | None = None
    user_gender: str | None = None
    user_device_type: str | None = None
    user_city: str | None = None


encoder = msgspec.json.Encoder(decimal_format="number")
served_decoder = msgspec.json.Decoder(ServedAd)
feedback_decoder = msgspec.json.Decoder(FeedbackEvent)
change_decoder = msgspec.json.Decoder(Campaign)

#: Served ads per ``served-ads`` record at most, as the ad server writes them. A consumer pays per record
#: (aiokafka parses each in Python): the served-writer drains ~1.5x the ads per second this way, and the
#: broker spends ~1 us less per ad (BENCHMARKS.md). Consumers size their polls in records by it.
SERVED_ADS_PER_RECORD: Final = 64


def encode_served(ads: Sequence[ServedAd]) -> bytes:
    """One ``served-ads`` record of ``ads`` (at most ``SERVED_ADS_PER_RECORD``): JSON Lines."""
    return encoder.encode_lines(ads)


def decode_served(value: bytes) -> tuple[list[ServedAd], list[str]]:
    """One ``served-ads`` record: its ads, and why each line that is not one was skipped.

    A record is JSON Lines, each ``ServedAd`` object followed by a newline; a record of one object
    without the newline (as written before several went into one record) reads the same. A bad line
    costs only itself; a record with no ad at all is one skip.
    """
    try:
        ads = served_decoder.decode_lines(value)
    except msgspec.DecodeError:
        pass  # at least one bad line: read them one by one below
    else:
        return (ads, []) if ads else ([], ["empty record"])
    ads, reasons = [], []
    for number, line in enumerate(value.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            ads.append(served_decoder.decode(line))
        except msgspec.DecodeError as exc:
            reasons.append(f"line {number}: {exc}")
    return ads, reasons
