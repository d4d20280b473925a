"""``RequestToken``: what a sealed ``request_id`` carries (``adserver.token`` seals and opens it).

A msgspec Struct, in a module of its own because ``adserver.token`` is compiled by mypyc
(``adplatform.native``), which drops a Struct's class options (here ``array_like``: the token's wire
format).
"""

from __future__ import annotations

import msgspec


class RequestToken(msgspec.Struct, frozen=True, array_like=True, kw_only=True):
    """What feedback needs to charge a served ad: the campaign, the auction's prices, the user, the time.

    Keyword-only, because four of its fields are adjacent ints a positional call could swap silently.
    ``array_like`` keeps the payload short: the wire order is the field order below, so reordering the
    fields would change what every token in flight means.
    """

    nonce: str
    campaign_id: str
    campaign_version: int
    issued_ms: int
    user_id: str
    clearing_cpm_units: int
    #: What a click and an acquisition cost (second price, rounded down to the micro).
    auction_cpc_micros: int
    auction_cpa_micros: int
    user_age: int | None = None
    user_gender: str | None = None
    user_device_type: str | None = None
    user_city: str | None = None
