"""Wire formats of the topics, as msgspec Structs with encoders and decoders built once.

``ad-changes`` carries ``index.campaign.Campaign`` (re-exported as ``AdChange``). Money on the wire is an
exact decimal JSON number (``Decimal`` fields, encoded as numbers) next to its integer micro-units, so
Spark and people read amounts while the books add up in integers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

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
