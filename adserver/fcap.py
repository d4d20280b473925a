"""The serve path's auction with delivery controls (frequency caps, even pacing): free unless a capped or
throttled campaign could win.

``capped_auction`` runs the auction's head from the index as before. Only when a capped campaign is among
the top bids does it walk on (``index.fcap.ladder``) and ask Redis, in one script call with a deadline,
which capped candidate this user may still see (``budget.fcap_redis``); the auction is then re-settled
without the ones at their cap (``index.auction.resettle``): the next bid wins and the one after it sets
the price.

Degradation policy (Redis slow, down, or not connected yet, or its client failing in any way): capped
campaigns are skipped, never served over their cap: the request gets the best uncapped candidate, or no
fill. After ``TRIP_AFTER`` failures in a row the gate stops asking Redis for ``RETRY_S`` (every request
would otherwise wait for the deadline); one slow call alone does not. A call that timed out may still
have counted its ad in Redis: a user may then see a capped campaign less often, never more. The anonymous
user (``1111-1111-1111-1111``) has no identity to count against: capped campaigns are never served to it.

At-cap memory: the script also says, for each candidate it passed over at its cap, how long until the
user may see it again (its oldest ad leaves the window). The gate remembers those (user, campaign) pairs
until then (at most ``AT_CAP_MAX_S``, so a raised cap is seen soon; ``AT_CAP_ENTRIES`` pairs at most) and
treats them as at their cap without asking: a user at a cap who keeps asking costs no round trip, and
the answer is the one Redis would give (a window only frees at its oldest ad's time; the wait is measured
after the script ran, so the memory ends late, never early).

Even pacing (``adserver.throttle``): an even-paced campaign among the top bids is drawn against its
worker's serve probability; one drawn out sits the request out (neither wins nor prices it, as a capped
one at its cap), and the auction moves on the same way. Each campaign is drawn at most once per request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from adplatform.redis_client import ClientFailureLog, is_redis_failure
from adserver.params import ANONYMOUS_USER_ID
from budget.fcap_redis import FrequencyCapStore
from index.auction import resettle, settle
from index.campaign import EVEN, Campaign
from index.explain import LossReason
from index.fcap import ladder
from index.index import TargetingIndex
from index.results import AuctionResult
from index.targeting import AdRequest

if TYPE_CHECKING:  # adserver.throttle imports only what the gate holds
    from adserver.throttle import EvenThrottle

logger = logging.getLogger(__name__)

#: Failures in a row (errors or missed deadlines) after which the gate stops asking Redis for a while.
TRIP_AFTER: Final = 3
#: Seconds the gate then skips capped campaigns without asking.
RETRY_S: Final = 0.5
#: Longest time a (user, campaign) at its cap is remembered (a campaign's cap may be raised meanwhile).
AT_CAP_MAX_S: Final = 30.0
#: (user, campaign) pairs remembered at most; the oldest goes first.
AT_CAP_ENTRIES: Final = 100_000


@dataclass
class CapStats:
    """What the cap gate did, for ``/metrics`` and tests."""

    #: Requests whose auction asked Redis (a capped campaign could win).
    checked: int = 0
    #: Of those, requests whose best capped bid was at its cap for the user: the auction moved on.
    moved_on: int = 0
    #: Requests whose capped candidates were all known at their cap for the user: no Redis call.
    remembered: int = 0
    #: Requests that skipped capped campaigns: Redis failed, missed the deadline, or was skipped after it.
    skipped_unavailable: int = 0
    #: Requests of the anonymous user that skipped capped campaigns.
    skipped_anonymous: int = 0


@dataclass
class CapGate:
    """Decides, per request, which capped candidates are out; ``store`` is ``None`` until connected."""

    deadline_s: float = 0.020
    store: FrequencyCapStore | None = None
    #: Even pacing's serve probabilities; ``None``: nothing is throttled.
    throttle: EvenThrottle | None = None
    stats: CapStats = field(default_factory=CapStats)
    #: (user, campaign) → ``time.monotonic()`` until which the user is at the campaign's cap.
    _at_cap: dict[tuple[str, str], float] = field(default_factory=dict)
    _failures: int = 0
    _down_until: float = 0.0
    _client_failures: ClientFailureLog = field(
        default_factory=lambda: ClientFailureLog(logger, "frequency caps (capped campaigns skipped)")
    )

    async def excluded(self, user_id: str, capped: Sequence[Campaign], now_s: float) -> Collection[str]:
        """The capped candidates (auction order) the auction must pass over: those the user has reached
        the cap of, ahead of the one the store took; all of them when none may be taken or when the
        store cannot answer in time."""
        if user_id == ANONYMOUS_USER_ID:
            self.stats.skipped_anonymous += 1
            return {c.campaign_id for c in capped}
        store = self.store
        if store is None or time.monotonic() < self._down_until:
            self.stats.skipped_unavailable += 1
            return {c.campaign_id for c in capped}
        known = self._known_at_cap(user_id, capped)
        ask = [c for c in capped if c.campaign_id not in known]
        if not ask:
            self.stats.remembered += 1
            self.stats.moved_on += 1
            return known
        self.stats.checked += 1
        try:
            taken, waits = await asyncio.wait_for(store.pick_at_cap(user_id, ask, now_s), self.deadline_s)
        except Exception as exc:  # the check's guard: Redis failing degrades; a bug of ours is raised
            if not is_redis_failure(exc):
                raise
            self._failed(exc)
            return {c.campaign_id for c in capped}
        self._failures = 0
        self._remember(user_id, ask, waits)
        if taken < 0:
            self.stats.moved_on += 1
            return {c.campaign_id for c in capped}
        # Out: every capped candidate ahead of the one taken (those known at their cap and those the
        # script passed over); the ones after it may still price it, as without the memory.
        chosen = ask[taken].campaign_id
        out: set[str] = set()
        for c in capped:
            if c.campaign_id == chosen:
                break
            out.add(c.campaign_id)
        if out:
            self.stats.moved_on += 1
        return out

    def _failed(self, exc: BaseException) -> None:
        """Count a failed check as Redis being unavailable (any failure of its client is)."""
        self._failures += 1
        if self._failures >= TRIP_AFTER:
            self._failures = 0
            self._down_until = time.monotonic() + RETRY_S
        self.stats.skipped_unavailable += 1
        logger.debug("frequency caps unavailable (%r): capped campaigns skipped", exc)
        self._client_failures.note(exc)  # a traceback now and then if the client itself failed

    def _known_at_cap(self, user_id: str, capped: Sequence[Campaign]) -> set[str]:
        if not self._at_cap:
            return set()
        now = time.monotonic()
        known: set[str] = set()
        for c in capped:
            key = (user_id, c.campaign_id)
            until = self._at_cap.get(key)
            if until is not None:
                if until > now:
                    known.add(c.campaign_id)
                else:
                    del self._at_cap[key]
        return known

    def _remember(self, user_id: str, asked: Sequence[Campaign], waits: Sequence[float]) -> None:
        now = time.monotonic()
        for c, wait_s in zip(asked, waits, strict=False):
            if len(self._at_cap) >= AT_CAP_ENTRIES:
                del self._at_cap[next(iter(self._at_cap))]  # the oldest entry
            self._at_cap[(user_id, c.campaign_id)] = now + min(wait_s, AT_CAP_MAX_S)


def _admitted(c: Campaign, throttle: EvenThrottle | None, drawn: dict[str, bool], rng: random.Random) -> bool:
    """Whether even pacing lets ``c`` take part in this request (drawn once per request; ``drawn`` holds
    each even campaign's draw)."""
    if throttle is None or c.pacing_mode != EVEN:
        return True
    cid = c.campaign_id
    seen = drawn.get(cid)
    if seen is None:
        throttle.watch(cid)
        p = throttle.probability.get(cid)
        seen = drawn[cid] = p is None or rng.random() < p
    return seen


@dataclass(frozen=True)
class CapCheck:
    """An auction that needs the cap store: a capped campaign could win. ``finish_auction`` settles it."""

    ranked: Sequence[Campaign]
    capped: Sequence[Campaign]


def begin_auction(
    gate: CapGate,
    index: TargetingIndex,
    request: AdRequest,
    now_s: float,
    *,
    reserve_cpm_units: int,
    rng: random.Random,
    sat_out: dict[str, LossReason] | None = None,
) -> AuctionResult | CapCheck | None:
    """The auction's part that needs no I/O: the result (``None``: no fill) or, when a capped campaign
    could win, the ``CapCheck`` to finish with ``finish_auction`` (the serve path's direct answer runs
    this synchronously and awaits only a cap check)."""
    head = index.top(request, now_s, reserve_cpm_units)
    if head is None:
        return None
    throttle = gate.throttle
    drawn: dict[str, bool] = {}
    for c in head.winners:
        if c.frequency_cap is not None or not _admitted(c, throttle, drawn, rng):
            break
    else:
        return settle(head.winners, head.second_cpm_units, reserve_cpm_units=reserve_cpm_units, rng=rng)
    # A capped or throttled campaign could win: the walk goes on below the head, as far as it matters.
    admitted = (
        c for c in index.ranked(request, now_s, reserve_cpm_units) if _admitted(c, throttle, drawn, rng)
    )
    ranked, capped = ladder(admitted, rng=rng)
    if sat_out is not None:
        sat_out.update((cid, "throttled") for cid, admitted in drawn.items() if not admitted)
    if capped:
        return CapCheck(ranked, capped)
    return resettle(ranked, (), reserve_cpm_units=reserve_cpm_units)


async def finish_auction(
    gate: CapGate,
    check: CapCheck,
    user_id: str,
    now_s: float,
    *,
    reserve_cpm_units: int,
    sat_out: dict[str, LossReason] | None = None,
) -> AuctionResult | None:
    """Settles an auction ``begin_auction`` left to the cap store."""
    excluded = await gate.excluded(user_id, check.capped, now_s)
    if sat_out is not None:
        sat_out.update((cid, "capped") for cid in excluded)
    return resettle(check.ranked, excluded, reserve_cpm_units=reserve_cpm_units)


async def capped_auction(
    gate: CapGate,
    index: TargetingIndex,
    request: AdRequest,
    now_s: float,
    *,
    reserve_cpm_units: int,
    rng: random.Random,
    sat_out: dict[str, LossReason] | None = None,
) -> AuctionResult | None:
    """``index.auction.run_auction`` with frequency caps and even pacing: the same result, with no Redis
    call, whenever no capped campaign is among the top bids and no even one there is drawn out.

    ``sat_out``, when given, receives the campaigns passed over and why (``capped``, ``throttled``): the
    loss reasons of a sampled request."""
    begun = begin_auction(
        gate, index, request, now_s, reserve_cpm_units=reserve_cpm_units, rng=rng, sat_out=sat_out
    )
    if isinstance(begun, CapCheck):
        return await finish_auction(
            gate, begun, request.user_id, now_s, reserve_cpm_units=reserve_cpm_units, sat_out=sat_out
        )
    return begun
