"""The normalized campaign: what the Ad Manager stores and publishes to ``ad-changes``.

One ``Campaign`` is the full state of a campaign after an instruction; the ad server's index is a fold of
these by ``version`` (higher wins). Money is in micro-units, cpm in 1e-10 units (see ``index.money``),
times are UTC epoch seconds.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from index.fcap import FrequencyCap

ALL: Final = "All"
ACTIVE: Final = "Active"
INACTIVE: Final = "Inactive"
Status = Literal["Active", "Inactive"]
#: How a campaign spends a slot's budget: ``asap`` as fast as it wins (the behaviour before pacing modes),
#: ``even`` throttled to spread it over the slot (``index.throttle``).
PacingMode = Literal["asap", "even"]
ASAP: Final = "asap"
EVEN: Final = "even"
PACING_MODES: Final = (ASAP, EVEN)

DEVICE_TYPES: Final = ("Android Mobile", "iPhone", "Windows Computer", "Macbook", "Linux Computer")
GENDERS: Final = ("M", "F")
INCOME_BUCKETS: Final = ("L", "M", "H")
#: Slot length of the pacing model, seconds (10 minutes, as the original Slot Budget Manager).
SLOT_S: Final = 600


class Campaign(msgspec.Struct, frozen=True, kw_only=True):
    """Full normalized state of one campaign at ``version`` (the ``ad-changes`` payload)."""

    campaign_id: str
    version: int
    status: Status
    action: str
    text: str
    category: str
    keywords: str
    target_gender: str
    #: Inclusive age bounds; ``0, 0`` means any age.
    target_age_start: int
    target_age_end: int
    target_city: str
    target_state: str
    target_country: str
    target_income_bucket: str
    target_device: str
    cpc_micros: int
    cpa_micros: int
    #: ``75·cpc_micros + 5·cpa_micros``: the bid, in 1e-10 units.
    cpm_units: int
    budget_micros: int
    #: Flight as UTC epoch seconds, start inclusive, end exclusive.
    flight_start_s: int
    flight_end_s: int
    #: The even plan: budget over the flight's epoch-aligned slots of the configured length, rounded down to
    #: the micro (``index.pacing.planned_slot_budget``). Redis holds the live slot budget, which each slot
    #: recomputes from what remains.
    slot_budget_micros: int
    updated_at_s: int = 0
    #: At most N ads per user per window (``index.fcap``); ``None`` (and any message from before caps
    #: existed, which lacks the field) is uncapped.
    frequency_cap: FrequencyCap | None = None
    #: ``asap`` for a message from before pacing modes existed (which lacks the field): that was its
    #: behaviour. New instructions default to ``even`` (``adplatform.instruction``).
    pacing_mode: PacingMode = "asap"

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def live_at(self, now_s: float) -> bool:
        """Active and inside its flight at ``now_s``."""
        return self.status == ACTIVE and self.flight_start_s <= now_s < self.flight_end_s
