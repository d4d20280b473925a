"""What the dashboard's JSON endpoints answer (``/dashboard/api/...``): display values, not the books.

Money here is for charts and tables: the exact decimal string where one is shown (``spent``), a float in
currency units where one is plotted or sorted (``spent_value``). The ``/v1`` API stays the exact source.
"""

from __future__ import annotations

import msgspec

from admin.insight_schema import Diagnosis
from admin.schema import CampaignDetail
from adplatform.redis_latency import StallReport


class TargetOut(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    up: bool
    error: str | None


class CampaignCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Active campaigns inside their flight; of those, the ones the ad servers skip (blocked: the slot's or
    the total budget spent) and the ones whose total budget is spent (exhausted, blocked too)."""

    live: int
    blocked: int
    exhausted: int


class Burn(msgspec.Struct, frozen=True, kw_only=True):
    """Live campaigns' spend (Redis) against what the even plan has them spend by now."""

    spent: float
    planned: float
    ratio: float | None


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    """The overview's numbers; a rate is None until two scrapes ``window_s`` apart exist."""

    at: float
    window_s: float | None
    refresh_ms: int
    targets: list[TargetOut]
    requests_total: float | None
    served_total: float | None
    requests_per_s: float | None
    fill_rate: float | None
    fill_rate_total: float | None
    serve_p50_ms: float | None
    serve_p99_ms: float | None
    feedback_per_s: float | None
    feedback_p50_ms: float | None
    feedback_p99_ms: float | None
    #: Mean milliseconds per feedback batch in each stage (``gate_ms``, ``debit_ms``, ``publish_ms``) and
    #: ``requests_per_batch``, over the window (``admin.scrape.feedback_stages``); empty without a batch.
    feedback_stages_ms: dict[str, float]
    #: The disk's share of feedback's tail: Redis's stalls over the last minute; None when Redis's latency
    #: monitor is off, on a Redis Cluster (one monitor per node) or when Redis does not answer.
    redis_stalls: StallReport | None
    spend_per_min: float | None
    dlq_per_s: float | None
    consumer_lag: dict[str, float]
    archive_lag: float | None
    no_fill_per_s: dict[str, float]
    campaigns: CampaignCounts
    burn: Burn


class CampaignRow(msgspec.Struct, frozen=True, kw_only=True):
    campaign_id: str
    text: str
    category: str
    status: str
    budget: str
    spent: str
    remaining: str
    spent_value: float
    remaining_value: float
    pacing: str
    served: int
    clicks: int
    ctr: float | None


class CampaignRows(msgspec.Struct, frozen=True, kw_only=True):
    items: list[CampaignRow]
    truncated: bool


class PacePoint(msgspec.Struct, frozen=True, kw_only=True):
    """At the end of a slot (epoch ms): booked spend so far (None for slots still ahead) and the plan."""

    t: int
    spent: float | None
    plan: float


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    served: int


class CampaignBoard(msgspec.Struct, frozen=True, kw_only=True):
    """The campaign page: the API's detail, its pacing series, delivery breakdowns and diagnosis."""

    detail: CampaignDetail
    slot_s: int
    pacing: list[PacePoint]
    by_city: list[Bucket]
    by_device: list[Bucket]
    by_age: list[Bucket]
    diagnosis: Diagnosis | None
    diagnosis_note: str | None
