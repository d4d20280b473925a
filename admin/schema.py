"""The ``/v1`` API's JSON bodies as msgspec Structs: requests are validated with them (after the Ad
Manager's own per-field checks) and ``admin.openapi`` generates the OpenAPI document from them.

Request fields are the campaign CSV's columns, strings as in the CSV (money as decimal strings, ranges as
the seed's dict literals); the ``action`` column is implied by the endpoint. Schema constraints here are
never stricter than the manager's rules, so a body the manager accepts is never refused by its schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from adplatform.instruction import COLUMNS, MAX_FIELD_CHARS, CampaignInstruction
from index.delivery import PaceState

Text = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_CHARS)]
CampaignId = Annotated[
    str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,64}$", description="Letters, digits, _ and -; 1 to 64.")
]
Gender = Literal["All", "M", "F"]
Device = Literal["All", "Android Mobile", "iPhone", "Windows Computer", "Macbook", "Linux Computer"]
Income = Literal["All", "L", "M", "H"]
Range = Annotated[
    str,
    msgspec.Meta(
        max_length=200,
        description="The seed format's dict literal, e.g. {'start': '20', 'end': '45'}.",
        examples=["{'start': '2026-01-01', 'end': '2026-01-31'}"],
    ),
]
Money = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_CHARS, description="Decimal, at most 6 places.")]
Status = Literal["Active", "Inactive"]
PacingMode = Annotated[
    Literal["", "asap", "even"],
    msgspec.Meta(
        description="asap: spend each 10-minute slot's budget as fast as the campaign wins; even: spread it "
        "over the slot. Empty or absent: even in a create, the campaign's current mode in a patch."
    ),
]
#: Every field of an instruction, in order (the CSV's columns, then any optional ones).
FIELDS: tuple[str, ...] = CampaignInstruction.__struct_fields__


#: Field types of the request bodies, where the schema can say more than "a string of at most 1,000".
_TYPES: dict[str, Any] = {
    "campaign_id": CampaignId,
    "target_gender": Gender,
    "target_device": Device,
    "target_income_bucket": Income,
    "target_age_range": Range,
    "date_range": Range,
    "time_range": Range,
    "cpc": Money,
    "cpa": Money,
    "budget": Money,
    "pacing_mode": PacingMode,
}


def _body_struct(name: str, doc: str, *, patch: bool) -> type[msgspec.Struct]:
    """A request body with the fields of ``CampaignInstruction`` itself (so a column added to the
    instruction is in the API the moment it is in the CSV): every field but ``action`` (and, for a patch,
    ``campaign_id``); the CSV's required columns required in a create, everything optional in a patch."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    defaults = dict(zip(reversed(FIELDS), reversed(CampaignInstruction.__struct_defaults__), strict=False))
    for field in FIELDS:
        if field == "action" or (patch and field == "campaign_id"):
            continue
        kind = _TYPES.get(field, Text)
        if patch:
            fields.append((field, kind | msgspec.UnsetType, msgspec.UNSET))
        elif field in COLUMNS:
            fields.append((field, kind))
        else:
            fields.append((field, kind, defaults[field]))
    struct = msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, omit_defaults=True)
    struct.__doc__ = doc
    return struct


CampaignCreate = _body_struct(
    "CampaignCreate", "``POST /v1/campaigns``: a New Campaign instruction (every CSV column but ``action``).",
    patch=False,
)  # fmt: skip
CampaignPatch = _body_struct(
    "CampaignPatch",
    "``PATCH /v1/campaigns/{id}``: the columns to change; the rest keep the campaign's current values. The "
    "merged row is published as an Update Campaign instruction (which also re-activates a stopped one).",
    patch=True,
)


class WriteResult(msgspec.Struct, kw_only=True):
    """The answer to a write: where its instruction went (202), and with ``?wait=true`` that it is applied
    (200). ``version`` is what the campaign's version becomes: ``offset + 1``. A stop of a stopped campaign
    publishes nothing: 200 with ``published`` false and no partition, offset or version."""

    campaign_id: str
    action: Literal["New Campaign", "Update Campaign", "Stop Campaign"]
    author: str
    published: bool
    partition: int | None
    offset: int | None
    version: int | None
    applied: bool
    wait_ms: float | None = None


class Campaign(msgspec.Struct, kw_only=True):
    """A campaign as stored in PostgreSQL (``online_ads.ads``), in the CSV's spelling, plus its state."""

    campaign_id: str
    status: Status
    version: int
    action: str
    text: str
    category: str
    keywords: str
    target_gender: str
    target_age_range: str
    target_city: str
    target_state: str
    target_country: str
    target_income_bucket: str
    target_device: str
    cpc: str
    cpa: str
    cpm: str
    budget: str
    date_range: str
    time_range: str
    flight_start: str
    flight_end: str
    updated_at: str
    #: N/window in its canonical spelling (``3/1h``); null: uncapped.
    frequency_cap: str | None = None
    #: ``asap`` or ``even`` (campaigns stored before pacing modes existed are ``asap``).
    pacing_mode: Literal["asap", "even"] = "asap"


class CampaignPage(msgspec.Struct, kw_only=True):
    """``GET /v1/campaigns``: campaigns by id; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[Campaign]
    next_cursor: str | None


class LiveMoney(msgspec.Struct, kw_only=True):
    """Money as decimal strings. ``spent`` is Redis's (live, what the ad servers obey), ``spent_booked``
    the ledger's in PostgreSQL (lags by the events not yet booked); ``remaining`` = budget - spent.
    The ``slot_*`` fields are null when Redis holds no budget for the campaign."""

    budget: str
    spent: str
    spent_booked: str
    remaining: str
    slot: int | None
    slot_budget: str | None
    slot_spent: str | None
    blocked: bool


class Counts(msgspec.Struct, kw_only=True):
    """Delivery in a period. ``served`` from online_ads.served_ads; ``clicks`` and ``acquisitions`` are the
    charged feedback events by their action (online_ads.spend_events; one feedback is one event, charged
    for its furthest action, so a converted click counts as an acquisition, and a free one is not booked);
    ``views`` cost nothing and are not kept in PostgreSQL (only in the archive), so null; ``ctr`` =
    (clicks + acquisitions) / served, null before any serve."""

    served: int
    views: int | None
    clicks: int
    acquisitions: int
    ctr: float | None


class Delivery(msgspec.Struct, kw_only=True):
    flight: Counts
    today: Counts


class LastChange(msgspec.Struct, kw_only=True):
    """The campaign's newest instruction: through the API (with its author) or not (CSV producer: author
    null). ``pending`` when the API published it and the manager has not stored it yet."""

    action: str
    author: str | None
    at: str
    version: int
    pending: bool


class CampaignDetail(msgspec.Struct, kw_only=True):
    """``GET /v1/campaigns/{id}``."""

    campaign: Campaign
    money: LiveMoney
    pacing: PaceState
    delivery: Delivery
    last_change: LastChange


class Replay(msgspec.Struct, kw_only=True):
    partition: int
    offset: int
    author: str
    at: str


class DlqItem(msgspec.Struct, kw_only=True):
    """One rejected instruction: where it is in the DLQ topic, its key and message (UTF-8, undecodable
    bytes replaced), the reason, where it came from, and its replay if any."""

    partition: int
    offset: int
    key: str | None
    value: str
    reason: str
    source: str
    timestamp_ms: int
    replay: Replay | None


class DlqPage(msgspec.Struct, kw_only=True):
    """``GET /v1/dlq``: the newest ``limit`` entries, oldest first."""

    items: list[DlqItem]


class ReplayResult(msgspec.Struct, kw_only=True):
    """``POST /v1/dlq/{partition}/{offset}/replay``: 202 for the first replay, 200 with the first replay's
    partition and offset for every later one (nothing published again)."""

    dlq_partition: int
    dlq_offset: int
    partition: int
    offset: int
    author: str
    replayed_before: bool


class AuditEntry(msgspec.Struct, kw_only=True):
    id: int
    at: str
    author: str
    action: Literal["create", "update", "stop", "replay"]
    campaign_id: str
    partition: int
    offset: int


class AuditPage(msgspec.Struct, kw_only=True):
    """``GET /v1/audit``: newest first; pass ``next_cursor`` as ``cursor`` (an id) for older entries."""

    items: list[AuditEntry]
    next_cursor: int | None


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer; ``errors`` (422) names each bad field with the Ad Manager's reason."""

    detail: str
    errors: dict[str, str] | None = None


REQUEST_BODIES: tuple[type[msgspec.Struct], ...] = (CampaignCreate, CampaignPatch)
RESPONSE_BODIES: tuple[type[msgspec.Struct], ...] = (
    WriteResult, CampaignPage, CampaignDetail, DlqPage, ReplayResult, AuditPage, ErrorBody,
)  # fmt: skip
