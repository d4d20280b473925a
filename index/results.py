"""What an auction returns: the head of the bids and the settled result.

In a module of their own because they are msgspec Structs, which mypyc cannot compile: the modules
that build them (``index.index``, ``index.auction``) are compiled (``adplatform.native``), this one is not.
"""

from __future__ import annotations

import msgspec

from index.campaign import Campaign


class TopBids(msgspec.Struct, frozen=True):
    """The head of an auction: every eligible campaign at the top bid, and the next bid below it.

    ``second_cpm_units`` is the second-highest eligible bid: equal to ``top_cpm_units`` when several
    campaigns tie at the top, ``None`` when the winner is the only bidder (at or above the reserve).
    """

    winners: tuple[Campaign, ...]
    top_cpm_units: int
    second_cpm_units: int | None


class AuctionResult(msgspec.Struct, frozen=True):
    """The winner and what it pays: the clearing cpm, and the per-click / per-acquisition charges."""

    campaign: Campaign
    clearing_cpm_units: int
    auction_cpc_micros: int
    auction_cpa_micros: int
    #: Bids that set the price: the top group, plus the runner-up when it priced a lone winner
    #: (1 when the winner bid alone and paid the reserve).
    bidders: int = 1
