from __future__ import annotations

import random
from collections import Counter

from index.auction import run_auction, scaled_charge, second_price
from index.index import TargetingIndex
from index.money import cpm_units
from index.results import AuctionResult
from tests.index.index_factory import NOW_S, campaign, request


def test_no_bidders() -> None:
    assert second_price([], rng=random.Random(1)) is None


def test_lone_bidder_pays_reserve() -> None:
    c = campaign(cpc_micros=1_000, cpa_micros=20_000)  # cpm 175_000
    result = second_price([c], reserve_cpm_units=35_000, rng=random.Random(1))
    assert result == AuctionResult(c, 35_000, 200, 4_000)
    free = second_price([c], rng=random.Random(1))
    assert free is not None
    assert (free.clearing_cpm_units, free.auction_cpc_micros, free.auction_cpa_micros) == (0, 0, 0)


def test_two_bidders_second_price() -> None:
    high = campaign(campaign_id="high", cpc_micros=1_000, cpa_micros=20_000)  # 175_000
    low = campaign(campaign_id="low", cpc_micros=700, cpa_micros=7_000)  # 87_500
    result = second_price([low, high], rng=random.Random(1))
    assert result is not None
    assert result.campaign is high
    assert result.clearing_cpm_units == 87_500
    assert result.auction_cpc_micros == 1_000 * 87_500 // 175_000 == 500
    assert result.auction_cpa_micros == 10_000


def test_reserve_above_second_price() -> None:
    high = campaign(campaign_id="high", cpc_micros=1_000, cpa_micros=20_000)
    low = campaign(campaign_id="low", cpc_micros=700, cpa_micros=7_000)
    result = second_price([high, low], reserve_cpm_units=100_000, rng=random.Random(1))
    assert result is not None
    assert (result.campaign, result.clearing_cpm_units) == (high, 100_000)


def test_bids_below_reserve_are_not_eligible() -> None:
    low = campaign(cpc_micros=700, cpa_micros=7_000)
    assert second_price([low], reserve_cpm_units=87_501, rng=random.Random(1)) is None
    assert second_price([low], reserve_cpm_units=87_500, rng=random.Random(1)) is not None


def test_tie_pays_own_bid_and_is_uniform() -> None:
    tied = [campaign(campaign_id=f"t{i}", cpc_micros=1_000, cpa_micros=20_000) for i in range(3)]
    low = campaign(campaign_id="low", cpc_micros=100, cpa_micros=0)
    rng = random.Random(7)
    wins: Counter[str] = Counter()
    for _ in range(3_000):
        result = second_price([*tied, low], rng=rng)
        assert result is not None
        assert result.clearing_cpm_units == 175_000
        assert (result.auction_cpc_micros, result.auction_cpa_micros) == (1_000, 20_000)
        wins[result.campaign.campaign_id] += 1
    assert set(wins) == {"t0", "t1", "t2"}
    # Each share is 1/3; ±0.05 is over 5 standard deviations at 3,000 draws.
    assert all(abs(n / 3_000 - 1 / 3) < 0.05 for n in wins.values())


def test_same_seed_same_winner() -> None:
    tied = [campaign(campaign_id=f"t{i}") for i in range(5)]
    first = second_price(tied, rng=random.Random(3))
    again = second_price(tied, rng=random.Random(3))
    assert first is not None and again is not None
    assert first.campaign is again.campaign


def test_charge_never_exceeds_bid() -> None:
    rng = random.Random(11)
    for _ in range(2_000):
        bids = [
            campaign(
                campaign_id=str(i), cpc_micros=rng.randrange(0, 5_000), cpa_micros=rng.randrange(0, 90_000)
            )
            for i in range(rng.randrange(1, 5))
        ]
        reserve = rng.randrange(0, 100_000)
        result = second_price(bids, reserve_cpm_units=reserve, rng=rng)
        if result is None:
            assert all(c.cpm_units < reserve for c in bids)
            continue
        won = result.campaign
        assert reserve <= result.clearing_cpm_units <= won.cpm_units
        assert result.auction_cpc_micros <= won.cpc_micros
        assert result.auction_cpa_micros <= won.cpa_micros
        assert cpm_units(result.auction_cpc_micros, result.auction_cpa_micros) <= result.clearing_cpm_units


def test_scaled_charge_rounds_down() -> None:
    assert scaled_charge(1_000, 2, 3) == 666
    assert scaled_charge(1_000, 0, 0) == 0


def test_run_auction_uses_index() -> None:
    index = TargetingIndex()
    high = campaign(campaign_id="high", cpc_micros=1_000, cpa_micros=20_000, target_device="iPhone")
    mid = campaign(campaign_id="mid", cpc_micros=900, cpa_micros=20_000)
    low = campaign(campaign_id="low", cpc_micros=100, cpa_micros=0)
    index.apply_all([high, mid, low])
    iphone = run_auction(index, request(device_type="iPhone"), NOW_S, rng=random.Random(1))
    assert iphone is not None
    assert (iphone.campaign, iphone.clearing_cpm_units) == (high, mid.cpm_units)
    other = run_auction(index, request(device_type="Macbook"), NOW_S, rng=random.Random(1))
    assert other is not None
    assert (other.campaign, other.clearing_cpm_units) == (mid, low.cpm_units)
    index.block("mid")
    blocked = run_auction(index, request(), NOW_S, reserve_cpm_units=5, rng=random.Random(1))
    assert blocked is not None
    assert (blocked.campaign, blocked.clearing_cpm_units) == (low, 5)
    assert run_auction(index, request(), NOW_S, reserve_cpm_units=10**9, rng=random.Random(1)) is None


def test_bidders_counts_the_bids_that_set_the_price() -> None:
    high = campaign(campaign_id="high", cpc_micros=1_000, cpa_micros=20_000)  # 175_000
    twin = campaign(campaign_id="twin", cpc_micros=1_000, cpa_micros=20_000)
    low = campaign(campaign_id="low", cpc_micros=700, cpa_micros=7_000)  # 87_500
    rng = random.Random(1)
    counts = [
        result.bidders if (result := second_price(bids, rng=rng)) is not None else None
        for bids in ([high], [high, low], [high, twin, low])
    ]
    assert counts == [1, 2, 2]  # alone; the runner-up priced it; the tie group priced itself
