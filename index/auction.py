"""The second-price auction, in exact integer units.

Bids are ``cpm_units`` (1e-10). The winner is the highest bid, ties broken uniformly at random; it clears at
``p = max(second-highest bid, reserve)`` (a lone bidder pays the reserve) and is charged per event at the
same ratio, rounded down to the micro so the charge never exceeds its own bid.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from index.campaign import Campaign
from index.index import TargetingIndex
from index.results import AuctionResult, TopBids
from index.targeting import AdRequest


def scaled_charge(bid_micros: int, clearing_cpm_units: int, bid_cpm_units: int) -> int:
    """``bid · p / cpm`` rounded down to the micro: never above the bid since ``p <= cpm``."""
    if bid_cpm_units <= 0:
        return 0  # a zero bid clears at zero (only possible with a zero reserve)
    return bid_micros * clearing_cpm_units // bid_cpm_units


def settle(
    winners: Sequence[Campaign],
    second_cpm_units: int | None,
    *,
    reserve_cpm_units: int,
    rng: random.Random,
) -> AuctionResult:
    """Pick the winner among equal top bids uniformly and price it at ``max(second, reserve)``."""
    winner = winners[0] if len(winners) == 1 else rng.choice(winners)
    price = reserve_cpm_units if second_cpm_units is None else max(second_cpm_units, reserve_cpm_units)
    cpm = winner.cpm_units
    return AuctionResult(
        campaign=winner,
        clearing_cpm_units=price,
        auction_cpc_micros=scaled_charge(winner.cpc_micros, price, cpm),
        auction_cpa_micros=scaled_charge(winner.cpa_micros, price, cpm),
        bidders=len(winners) + (len(winners) == 1 and second_cpm_units is not None),
    )


def resettle(
    ranked: Sequence[Campaign], excluded: Collection[str], *, reserve_cpm_units: int
) -> AuctionResult | None:
    """The auction again without the ``excluded`` campaigns (capped ones this user has reached the cap
    of): the first remaining bid of ``ranked`` wins and the next remaining bid prices it.

    ``ranked`` is highest bid first with equal bids already in random order (``index.fcap.ladder``
    shuffles them: the tie-break), so the winner is a uniform pick among the remaining top bids, as in
    ``settle``. Bids below the reserve are not eligible."""
    remaining = [c for c in ranked if c.campaign_id not in excluded and c.cpm_units >= reserve_cpm_units]
    if not remaining:
        return None
    winner = remaining[0]
    top = winner.cpm_units
    tied = 1
    while tied < len(remaining) and remaining[tied].cpm_units == top:
        tied += 1
    if tied > 1:
        second: int | None = top
    else:
        second = remaining[1].cpm_units if len(remaining) > 1 else None
    price = reserve_cpm_units if second is None else max(second, reserve_cpm_units)
    return AuctionResult(
        campaign=winner,
        clearing_cpm_units=price,
        auction_cpc_micros=scaled_charge(winner.cpc_micros, price, top),
        auction_cpa_micros=scaled_charge(winner.cpa_micros, price, top),
        bidders=tied + (tied == 1 and second is not None),
    )


def top_bids(bids: Sequence[Campaign], reserve_cpm_units: int = 0) -> TopBids | None:
    """Reference head of an auction over any list of eligible campaigns (no order assumed)."""
    valid = [c for c in bids if c.cpm_units >= reserve_cpm_units]
    if not valid:
        return None
    top = max(c.cpm_units for c in valid)
    winners = tuple(c for c in valid if c.cpm_units == top)
    if len(winners) > 1:
        return TopBids(winners, top, top)
    rest = [c.cpm_units for c in valid if c.cpm_units < top]
    return TopBids(winners, top, max(rest) if rest else None)


def second_price(
    bids: Sequence[Campaign], *, reserve_cpm_units: int = 0, rng: random.Random
) -> AuctionResult | None:
    """Auction over an explicit list of eligible campaigns (the reference; O(n))."""
    head = top_bids(bids, reserve_cpm_units)
    if head is None:
        return None
    return settle(head.winners, head.second_cpm_units, reserve_cpm_units=reserve_cpm_units, rng=rng)


def run_auction(
    index: TargetingIndex,
    request: AdRequest,
    now_s: float,
    *,
    reserve_cpm_units: int = 0,
    rng: random.Random,
) -> AuctionResult | None:
    """The hot path: the index walks its bid-sorted candidates only as far as the auction needs."""
    head = index.top(request, now_s, reserve_cpm_units)
    if head is None:
        return None
    return settle(head.winners, head.second_cpm_units, reserve_cpm_units=reserve_cpm_units, rng=rng)
