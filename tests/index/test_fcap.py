"""Frequency caps, the pure part: the cap's spelling, the ladder a request's auction works on, and the
re-settled auction once the capped campaigns a user has reached are excluded."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from index.auction import resettle, second_price
from index.campaign import Campaign
from index.fcap import (
    MAX_CAPPED,
    FrequencyCap,
    FrequencyCapError,
    format_cap,
    ladder,
    parse_cap,
)
from tests.index.index_factory import campaign

CAP = FrequencyCap(count=3, window_s=3600)


@pytest.mark.parametrize(
    ("text", "count", "window_s"),
    [
        ("3/1h", 3, 3600),
        ("10/1d", 10, 86_400),
        ("5/flight", 5, 0),
        ("1/30s", 1, 30),
        ("2/10m", 2, 600),
        (" 4/365d ", 4, 365 * 86_400),
        ("1000/1s", 1000, 1),
    ],
)
def test_parse_good(text: str, count: int, window_s: int) -> None:
    assert parse_cap(text) == FrequencyCap(count=count, window_s=window_s)


def test_empty_is_uncapped() -> None:
    assert parse_cap("") is None
    assert parse_cap("  ") is None
    assert format_cap(None) == ""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0/1h", "count must be 1 to 1000, got 0"),
        ("1001/1h", "count must be 1 to 1000, got 1001"),
        ("3/", "expected N/window"),
        ("x/1d", "expected N/window"),
        ("3", "expected N/window"),
        ("/1h", "expected N/window"),
        ("3/1w", "expected N/window"),
        ("3/h", "expected N/window"),
        ("-3/1h", "expected N/window"),
        ("3/-1h", "expected N/window"),
        ("3/1.5h", "expected N/window"),
        ("3/1 h", "expected N/window"),
        ("3/Flight", "expected N/window"),
        ("3/1h/2", "expected N/window"),
        ("3/0s", "window must be positive"),
        ("3/366d", "window longer than 365d"),
        ("3/8761h", "window longer than 365d"),
        ("3/99999999d", "window longer than 365d"),
        ("٣/1h", "expected N/window"),  # int() would take Arabic-Indic digits; the format does not
    ],
)
def test_parse_bad(text: str, reason: str) -> None:
    with pytest.raises(FrequencyCapError, match="^" + reason.replace("(", r"\(")):
        parse_cap(text)


def test_format_is_canonical_and_round_trips() -> None:
    assert format_cap(FrequencyCap(count=3, window_s=7200)) == "3/2h"
    assert format_cap(FrequencyCap(count=3, window_s=86_400 * 2)) == "3/2d"
    assert format_cap(FrequencyCap(count=3, window_s=90)) == "3/90s"
    assert format_cap(FrequencyCap(count=5, window_s=0)) == "5/flight"
    for text in ("3/60m", "3/3600s", "3/1h"):
        assert format_cap(parse_cap(text)) == "3/1h"


def test_windows_of_a_campaign() -> None:
    c = campaign(flight_start_s=1_000, flight_end_s=4_600)
    flight = FrequencyCap(count=5, window_s=0)
    assert flight.window_ms(c) == 3_600_000
    assert flight.ttl_ms(c, 1_600) == 3_000_000
    assert CAP.window_ms(c) == CAP.ttl_ms(c, 1_600) == 3_600_000


def test_old_ad_change_without_the_field_decodes_uncapped() -> None:
    c = campaign(frequency_cap=CAP)
    raw = msgspec.json.decode(msgspec.json.encode(c))
    assert raw["frequency_cap"] == {"count": 3, "window_s": 3600}
    del raw["frequency_cap"]
    old = msgspec.json.decode(msgspec.json.encode(raw), type=Campaign)
    assert old.frequency_cap is None
    assert msgspec.json.decode(msgspec.json.encode(c), type=Campaign) == c


def _bid(cid: str, cpc: int, capped: bool = False) -> Campaign:
    return campaign(campaign_id=cid, cpc_micros=cpc, cpa_micros=0, frequency_cap=CAP if capped else None)


def test_ladder_stops_below_the_first_uncapped_bid() -> None:
    ranked = [_bid("a", 90, True), _bid("b", 80, True), _bid("u", 70), _bid("c", 60, True), _bid("v", 50)]
    lad = ladder(ranked, rng=random.Random(1))
    assert [c.campaign_id for c in lad.ranked] == ["a", "b", "u", "c"]  # c prices u
    assert [c.campaign_id for c in lad.capped] == ["a", "b"]


def test_ladder_keeps_the_tie_group_of_the_first_uncapped() -> None:
    ranked = [_bid("a", 90, True), _bid("u", 70), _bid("t", 70, True), _bid("v", 60), _bid("w", 50)]
    seen = set()
    for seed in range(40):
        lad = ladder(ranked, rng=random.Random(seed))
        ids = [c.campaign_id for c in lad.ranked]
        assert ids[0] == "a" and set(ids[1:3]) == {"u", "t"} and ids[3] == "v" and len(ids) == 4
        seen.add(tuple(c.campaign_id for c in lad.capped))
    assert seen == {("a",), ("a", "t")}  # t is checked only when the tie-break puts it first


def test_ladder_bounds_the_capped_candidates() -> None:
    ranked = [_bid(f"c{i}", 100 - i, True) for i in range(MAX_CAPPED + 3)] + [_bid("u", 10), _bid("v", 5)]
    lad = ladder(ranked, rng=random.Random(1))
    assert [c.campaign_id for c in lad.capped] == [f"c{i}" for i in range(MAX_CAPPED)]
    assert [c.campaign_id for c in lad.ranked][-2:] == ["u", "v"]


def test_ladder_without_uncapped_takes_every_capped_one() -> None:
    ranked = [_bid("a", 90, True), _bid("b", 80, True)]
    lad = ladder(ranked, rng=random.Random(1))
    assert lad.ranked == lad.capped == ranked
    assert ladder([], rng=random.Random(1)) == ([], [])


def test_resettle_moves_on_and_the_price_follows() -> None:
    a, b, u, v = _bid("a", 90, True), _bid("b", 80, True), _bid("u", 70), _bid("v", 50)
    ranked = [a, b, u, v]
    first = resettle(ranked, set(), reserve_cpm_units=0)
    assert first is not None and first.campaign is a and first.clearing_cpm_units == b.cpm_units
    moved = resettle(ranked, {"a"}, reserve_cpm_units=0)
    assert moved is not None and moved.campaign is b and moved.clearing_cpm_units == u.cpm_units
    assert moved.auction_cpc_micros == 80 * u.cpm_units // b.cpm_units
    last = resettle(ranked, {"a", "b"}, reserve_cpm_units=0)
    assert last is not None and last.campaign is u and last.clearing_cpm_units == v.cpm_units
    lone = resettle(ranked, {"a", "b", "v"}, reserve_cpm_units=1)
    assert lone is not None and lone.campaign is u and lone.clearing_cpm_units == 1 and lone.bidders == 1
    assert resettle(ranked, {"a", "b", "u", "v"}, reserve_cpm_units=0) is None
    assert resettle(ranked, set(), reserve_cpm_units=a.cpm_units + 1) is None


def test_resettle_tie_prices_at_the_top() -> None:
    x, y, z = _bid("x", 90, True), _bid("y", 90), _bid("z", 10)
    result = resettle([x, y, z], set(), reserve_cpm_units=0)
    assert result is not None and result.campaign is x and result.clearing_cpm_units == x.cpm_units
    assert result.bidders == 2
    alone = resettle([x, y, z], {"x"}, reserve_cpm_units=0)
    assert alone is not None and alone.campaign is y and alone.clearing_cpm_units == z.cpm_units


_bids = st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=12)


@given(_bids, st.sets(st.integers(0, 11)), st.integers(0, 600), st.integers(0, 2**32))
def test_resettle_is_the_auction_over_the_remaining_bids(
    bids: list[tuple[int, bool]], out: set[int], reserve: int, seed: int
) -> None:
    """Against the reference auction (``second_price``) over every campaign left after excluding some of
    the ladder's capped ones (those a user has reached): same winning bid, price, charges and bidders; the
    winner is the first remaining one in the ladder's order (its tie-break)."""
    pool = [_bid(f"c{i}", 10 + 5 * b, capped) for i, (b, capped) in enumerate(bids)]
    pool.sort(key=lambda c: -c.cpm_units)
    lad = ladder(pool, rng=random.Random(seed), max_capped=len(pool))
    excluded = {c.campaign_id for i, c in enumerate(lad.capped) if i in out}
    got = resettle(lad.ranked, excluded, reserve_cpm_units=reserve)
    remaining = [c for c in pool if c.campaign_id not in excluded]
    want = second_price(remaining, reserve_cpm_units=reserve, rng=random.Random(seed))
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got.campaign.cpm_units == want.campaign.cpm_units
    assert (got.clearing_cpm_units, got.bidders) == (want.clearing_cpm_units, want.bidders)
    assert (got.auction_cpc_micros, got.auction_cpa_micros) == (
        want.auction_cpc_micros,
        want.auction_cpa_micros,
    )
    assert got.campaign is next(c for c in lad.ranked if c.campaign_id not in excluded)
