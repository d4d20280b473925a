"""The bodies of ``GET /v1/explain`` and ``GET /v1/campaigns/{id}/diagnosis`` (money as exact decimal strings,
as in ``admin.schema``); ``admin.openapi`` generates their schemas from these Structs."""

from __future__ import annotations

import msgspec


class ExplainedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The request as the ad server would understand it: query over profile, location resolved."""

    user_id: str
    profile_found: bool
    device_type: str | None
    city: str | None
    state: str | None
    country: str | None
    age: int | None
    gender: str | None
    income_bucket: str | None


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """The clearing price: cpm, and the per-click / per-acquisition charges (None on a tie: each tied
    campaign pays its own bid when drawn)."""

    auction_cpm: str
    auction_cpc: str | None
    auction_cpa: str | None


class VerdictOut(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One campaign: ``verdict`` eligible or ineligible, ``reason`` the first that applies (None for the
    sole winner): stopped, flight_not_started, flight_over, targeting, blocked, below_reserve, tie, outbid."""

    campaign_id: str
    verdict: str
    reason: str | None
    detail: str
    bid: str
    cpc: str
    cpa: str
    attribute: str | None = None
    campaign_value: str | None = None
    request_value: str | None = None
    outbid_by: str | None = None


class ExplainResult(msgspec.Struct, frozen=True, kw_only=True):
    """The live auction for a hypothetical request, computed by the ad server's own index and auction code
    over the admin service's copy of the index."""

    at: float
    request: ExplainedRequest
    reserve_cpm: str
    campaigns: int
    winner: str | None
    tied: list[str]
    runner_up: str | None
    clearing: Price | None
    verdicts: list[VerdictOut]


class Share(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    share: float


class Mismatches(msgspec.Struct, frozen=True, kw_only=True):
    """Among sampled requests the campaign's targeting rejected: the attribute that rejected most."""

    attribute: str | None
    count: int
    share: float
    campaign_value: str | None
    by_attribute: dict[str, int]


class Diagnosis(msgspec.Struct, frozen=True, kw_only=True):
    """Why a campaign serves or not, over the sampled real traffic of the last ``window_s`` seconds.

    ``matched``: sampled requests its targeting and flight accepted; ``won`` / ``lost`` split those;
    ``lost_by_reason`` divides ``lost`` (blocked, below_reserve, tie, outbid; ``unexplained`` when a
    sample predates the campaign's current state). Shares are of ``samples``, except ``lost_by_reason``'s
    (of ``lost``). ``static`` lists what stops it for every request now (stopped, flight, blocked)."""

    campaign_id: str
    window_s: int
    samples: int
    matched: Share
    won: Share
    lost: Share
    lost_by_reason: dict[str, Share]
    not_matched: Share
    not_live: Share
    top_mismatch: Mismatches
    static: list[str]
