"""The wire format of ``ad-requests-sample``: one sampled serve request with its auction's outcome.

The ad servers publish a configurable share of their serve requests (``ADP_REQUEST_SAMPLE_RATE``, no-fills
included); the admin service aggregates them into a campaign's diagnosis. No user id travels in clear:
``user`` is a keyed BLAKE2b-64 digest of it (key: the current token-signing key), stable within one key's
life so repeat requests of one user can be told apart, and ``"anonymous"`` for the privacy id.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Final, Literal

import msgspec

from index.explain import Loss

Outcome = Literal["served", "no_fill"]
ANONYMOUS: Final = "anonymous"


class RequestSample(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One sampled request: its attributes as understood (location resolved), the winner and its price,
    the runner-up, and every campaign that matched targeting and flight but lost, with why (highest bid
    first, down to a bound: ``floor_cpm_units`` is the bid where the walk stopped, None if it saw all;
    see ``index.explain.AuctionLosses``)."""

    at_ms: int
    user: str
    device_type: str | None
    city: str | None
    state: str | None
    country: str | None
    age: int | None
    gender: str | None
    income_bucket: str | None
    outcome: Outcome
    winner: str | None
    #: Whether the winner was drawn among equal top bids.
    tie: bool
    runner_up: str | None
    auction_cpm: Decimal | None
    auction_cpc: Decimal | None
    auction_cpa: Decimal | None
    clearing_cpm_units: int | None
    reserve_cpm_units: int
    losses: tuple[Loss, ...]
    floor_cpm_units: int | None


def user_digest(user_id: str, key: bytes, *, anonymous_id: str) -> str:
    """The pseudonym of a user id in samples: keyed BLAKE2b, 8 bytes, hex (the privacy id stays a label)."""
    if user_id == anonymous_id:
        return ANONYMOUS
    return hashlib.blake2b(user_id.encode(), digest_size=8, key=key[:64]).hexdigest()


sample_encoder: Final = msgspec.json.Encoder(decimal_format="number")
sample_decoder: Final = msgspec.json.Decoder(RequestSample)
