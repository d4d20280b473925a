"""Even pacing on the serve path: each worker serves an even-paced campaign with a probability.

The probability of each even campaign this worker has seen at the top of an auction is updated every tick
(``TICK_S``) from the campaign's live budget hash in Redis (which the debit script keeps), by
``index.throttle.next_state``: one pipelined ``HMGET`` per tick for the watched campaigns, nothing
per request. Workers do not talk to each other: they read the same spend and apply the same rule.

A campaign's state (its probability and its rate estimate) carries over from one slot to the next
(traffic changes little in ten minutes), so a slot does not open with a burst at probability 1. Until a
debit rolls the hash to the new slot, the worker computes the new slot's budget itself with the scripts'
rule (``index.pacing.slot_budget`` at the slot's start) and counts its spend as 0. A campaign never seen
serves at probability 1 until the next tick. If Redis cannot be read, the probabilities stay as they are.
``asap`` campaigns are never throttled, and the hard cap (never more than the budget, nor the slot budget)
stays in the debit script.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adplatform import names
from index.pacing import Clock, SystemClock, slot_bounds, slot_budget, slot_id
from index.throttle import ThrottleState, next_state

logger = logging.getLogger(__name__)

#: Seconds between two updates of the probabilities.
TICK_S: Final = 1.0
#: Campaigns watched per worker at most (the even campaigns most recently at the top of an auction).
MAX_WATCHED: Final = 10_000
#: The budget hash's fields a tick reads (``budget.script``), in ``SlotState`` order.
FIELDS: Final = ("slot", "slot_budget", "slot_spent", "budget", "spent", "flight_start", "flight_end")


class SlotState(NamedTuple):
    """A campaign's budget hash as a tick reads it, micros and epoch seconds (``slot`` -1: no state)."""

    slot: int
    slot_budget: int
    slot_spent: int
    budget: int
    spent: int
    flight_start_s: int
    flight_end_s: int

    @classmethod
    def parse(cls, reply: list[bytes | None]) -> SlotState:
        slot, *rest = (int(v) if v is not None else None for v in reply)
        return cls(-1 if slot is None else slot, *(v or 0 for v in rest))

    def at(self, slot: int, slot_s: int) -> tuple[int, int]:
        """(slot budget, slot spent) of ``slot``: Redis's, or what the roll will make of them."""
        if self.slot == slot:
            return self.slot_budget, self.slot_spent
        start_s, _ = slot_bounds(slot, slot_s)
        return slot_budget(
            self.budget - self.spent, start_s, self.flight_start_s, self.flight_end_s, slot_s
        ), 0


@dataclass
class EvenThrottle:
    """Per-worker serve probabilities of even-paced campaigns (``probability``), and which to watch."""

    slot_s: int
    clock: Clock = field(default_factory=SystemClock)
    #: Seconds between ticks (a simulation may tick less often than a server).
    tick_s: float = TICK_S
    probability: dict[str, float] = field(default_factory=dict)
    _watched: dict[str, None] = field(default_factory=dict)
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)  # campaign → (slot, slot_spent)
    _state: dict[str, ThrottleState] = field(default_factory=dict)

    def watch(self, campaign_id: str) -> None:
        """Note an even campaign at the top of an auction: its probability is kept from the next tick."""
        if campaign_id not in self._watched:
            if len(self._watched) >= MAX_WATCHED:
                oldest = next(iter(self._watched))
                del self._watched[oldest]
                self.probability.pop(oldest, None)
                self._last.pop(oldest, None)
                self._state.pop(oldest, None)
            self._watched[campaign_id] = None

    def update(self, campaign_id: str, state: SlotState, now_s: float) -> None:
        """One tick of one campaign from its budget hash (``state.slot`` -1: no budget in Redis yet)."""
        if state.slot < 0:
            return  # no budget: the budget filter decides, nothing to pace against
        current = slot_id(now_s, self.slot_s)
        budget, spent = state.at(current, self.slot_s)
        start_s, _end = slot_bounds(current, self.slot_s)
        last = self._last.get(campaign_id)
        # Across a slot boundary the old slot's last charges are not known: the estimate is kept as is.
        earned = spent - last[1] if last is not None and last[0] == current else None
        paced = next_state(
            self._state.get(campaign_id, ThrottleState()),
            slot_budget_micros=budget,
            slot_spent_micros=spent,
            earned_micros=earned,
            elapsed_fraction=(now_s - start_s) / self.slot_s,
            tick_fraction=self.tick_s / self.slot_s,
        )
        self._state[campaign_id] = paced
        self.probability[campaign_id] = paced.p
        self._last[campaign_id] = (current, spent)

    async def tick(self, client: aioredis.Redis) -> None:
        """Read the watched campaigns' budget hashes (one pipeline) and update their probabilities."""
        ids = list(self._watched)
        if not ids:
            return
        async with client.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(names.budget_key(cid), *FIELDS)
            replies = await pipe.execute()
        now_s = self.clock.now()
        for cid, reply in zip(ids, replies, strict=True):
            self.update(cid, SlotState.parse(reply), now_s)

    async def run(self, client: aioredis.Redis) -> None:
        """Tick until cancelled; a Redis failure leaves the probabilities as they are."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick(client)
            except (RedisError, OSError) as exc:
                logger.debug("even pacing: budget states unreadable (%r); probabilities kept", exc)
