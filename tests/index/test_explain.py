"""Explain and auction losses against the plain targeting rule and the reference auction, on random data."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from index.auction import run_auction, second_price, top_bids
from index.campaign import INACTIVE, Campaign
from index.explain import (
    ATTRIBUTES,
    BLOCKED_UNKNOWN,
    REASON_ORDER,
    auction_losses,
    explain,
    first_mismatch,
)
from index.geo import DEFAULT_GEO
from index.index import TargetingIndex
from index.targeting import AdRequest, matches, targets
from tests.index.index_factory import NOW_S, campaign, campaigns, request, requests

_times = st.sampled_from((NOW_S - 7200, NOW_S - 5, NOW_S, NOW_S + 5, NOW_S + 15, NOW_S + 7000))


def _state(changes: list[Campaign]) -> dict[str, Campaign]:
    state: dict[str, Campaign] = {}
    for c in changes:
        old = state.get(c.campaign_id)
        if old is None or c.version > old.version:
            state[c.campaign_id] = c
    return state


def _index(changes: list[Campaign], blocked: set[str], warm: bool) -> TargetingIndex:
    index = TargetingIndex(blocked=blocked)
    if warm:
        index.warm()
    for c in changes:
        index.apply(c)
    return index


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(campaigns(), max_size=40),
    req=requests(),
    now_s=_times,
    blocked=st.sets(st.sampled_from(("a", "b", "c")), max_size=2),
    reserve=st.sampled_from((0, 0, 10_000, 20_000)),
    warm=st.booleans(),
)
def test_explain_equals_the_plain_rule_and_the_reference_auction(
    changes: list[Campaign], req: AdRequest, now_s: int, blocked: set[str], reserve: int, warm: bool
) -> None:
    index = _index(changes, blocked, warm)
    state = _state(changes)
    out = explain(index, req, now_s, reserve_cpm_units=reserve)
    by_id = {v.campaign_id: v for v in out.verdicts}
    assert len(by_id) == len(out.verdicts) == len(state)
    eligible = [
        c
        for c in state.values()
        if matches(c, req, now_s) and c.campaign_id not in blocked and c.cpm_units >= reserve
    ]
    assert {cid for cid, v in by_id.items() if v.verdict == "eligible"} == {c.campaign_id for c in eligible}
    ref = top_bids(eligible, reserve)
    if ref is None:
        assert (out.winner, out.tied, out.clearing_cpm_units) == (None, (), None)
    else:
        ids = sorted(c.campaign_id for c in ref.winners)
        assert (out.winner, out.tied) == ((ids[0], ()) if len(ids) == 1 else (None, tuple(ids)))
        expected = second_price(eligible, reserve_cpm_units=reserve, rng=random.Random(1))
        assert expected is not None and out.clearing_cpm_units == expected.clearing_cpm_units
        if out.winner is not None:
            assert out.auction_cpc_micros == expected.auction_cpc_micros
            below = [c for c in eligible if c.cpm_units < ref.top_cpm_units]
            best = max((c.cpm_units for c in below), default=None)
            runner = min((c.campaign_id for c in below if c.cpm_units == best), default=None)
            assert out.runner_up == runner
    location = DEFAULT_GEO.resolve(req.city, req.state, req.country)
    for cid, v in by_id.items():
        c = state[cid]
        # The first reason that applies, in the documented order.
        if not c.active:
            assert v.reason == "stopped"
        elif not c.flight_start_s <= now_s:
            assert v.reason == "flight_not_started"
        elif not now_s < c.flight_end_s:
            assert v.reason == "flight_over"
        elif not targets(c, req):
            assert v.reason == "targeting" and v.mismatch is not None
            assert v.mismatch == first_mismatch(c, req, location)
        elif cid in blocked:
            assert v.reason == "blocked" and v.detail == BLOCKED_UNKNOWN
        elif c.cpm_units < reserve:
            assert v.reason == "below_reserve"
        else:
            assert ref is not None
            if c.cpm_units < ref.top_cpm_units:
                assert v.reason == "outbid" and v.outbid_by_cpm_units == ref.top_cpm_units - c.cpm_units
            else:
                assert v.reason == ("tie" if len(ref.winners) > 1 else None)
    reasons = [v.reason for v in out.verdicts if v.verdict == "ineligible"]
    assert reasons == sorted(reasons, key=lambda r: REASON_ORDER.index(r) if r else -1)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(campaigns(), max_size=40),
    req=requests(),
    now_s=_times,
    blocked=st.sets(st.sampled_from(("a", "b", "c")), max_size=2),
    reserve=st.sampled_from((0, 0, 10_000, 20_000)),
    seed=st.integers(0, 2**32),
    max_listed=st.sampled_from((0, 1, 2, 100)),
    max_scanned=st.sampled_from((1, 3, 2_000)),
)
def test_auction_losses_name_every_matching_loser_above_the_floor(
    changes: list[Campaign],
    req: AdRequest,
    now_s: int,
    blocked: set[str],
    reserve: int,
    seed: int,
    max_listed: int,
    max_scanned: int,
) -> None:
    index = _index(changes, blocked, False)
    state = _state(changes)
    result = run_auction(index, req, now_s, reserve_cpm_units=reserve, rng=random.Random(seed))
    served = None if result is None else result.campaign
    out = auction_losses(
        index, req, now_s, served=served, reserve_cpm_units=reserve, max_listed=max_listed,
        max_scanned=max_scanned,
    )  # fmt: skip
    matched = [c for c in state.values() if matches(c, req, now_s)]
    losers = {c.campaign_id: c for c in matched if served is None or c.campaign_id != served.campaign_id}
    listed = {loss.campaign_id: loss.reason for loss in out.losses}
    assert len(listed) == len(out.losses) and set(listed) <= set(losers)
    assert sum(r != "blocked" for r in listed.values()) <= max_listed
    for cid, c in losers.items():
        if out.floor_cpm_units is None or c.cpm_units > out.floor_cpm_units:
            assert cid in listed  # above the floor, nothing is left out
        if cid not in listed:
            continue
        if cid in blocked:
            assert listed[cid] == "blocked"
        elif c.cpm_units < reserve:
            assert listed[cid] == "below_reserve"
        else:
            assert served is not None and c.cpm_units <= served.cpm_units
            assert listed[cid] == ("tie" if c.cpm_units == served.cpm_units else "outbid")
    bids = [losers[cid].cpm_units for cid in listed]
    assert bids == sorted(bids, reverse=True)
    if out.runner_up is not None:
        assert served is not None and listed[out.runner_up] in ("tie", "outbid")
        open_bids = [
            c.cpm_units for c in losers.values() if c.campaign_id not in blocked and c.cpm_units >= reserve
        ]
        assert losers[out.runner_up].cpm_units == max(open_bids)


def test_the_first_mismatching_attribute_is_named_with_both_values() -> None:
    index = TargetingIndex()
    index.apply(campaign(campaign_id="pune", target_city="Pune", target_gender="F"))
    index.apply(campaign(campaign_id="old", target_age_start=60, target_age_end=70))
    index.apply(campaign(campaign_id="stopped", status=INACTIVE))
    index.apply(campaign(campaign_id="late", flight_end_s=NOW_S - 1))
    index.apply(campaign(campaign_id="rich", cpc_micros=5_000))
    index.apply(campaign(campaign_id="poor", cpc_micros=10))
    index.block("blk")
    index.apply(campaign(campaign_id="blk", cpc_micros=9_000))
    out = explain(
        index, request(city="Mumbai", gender="F", age=30), NOW_S, reserve_cpm_units=0,
        blocked_why={"blk": "budget spent"},
    )  # fmt: skip
    v = {x.campaign_id: x for x in out.verdicts}
    assert v["pune"].reason == "targeting" and v["pune"].mismatch is not None
    assert (v["pune"].mismatch.attribute, v["pune"].mismatch.campaign_value) == ("city", "Pune")
    assert v["pune"].mismatch.request_value == "Mumbai"
    assert v["old"].mismatch is not None and v["old"].mismatch.attribute == "age"
    assert v["old"].mismatch.campaign_value == "60-70" and v["old"].mismatch.request_value == "30"
    assert (v["stopped"].reason, v["late"].reason) == ("stopped", "flight_over")
    assert (v["blk"].reason, v["blk"].detail) == ("blocked", "budget spent")
    assert out.winner == "rich" and v["rich"].reason is None
    assert out.runner_up in ("c1", "poor") and v["poor"].reason == "outbid"
    assert v["poor"].outbid_by_cpm_units == v["rich"].bid_cpm_units - v["poor"].bid_cpm_units
    assert [x.campaign_id for x in out.verdicts[:1]] == ["rich"]
    assert set(ATTRIBUTES) >= {"city", "age"}


def test_a_tie_is_reported_as_such() -> None:
    index = TargetingIndex()
    for cid in ("x", "y"):
        index.apply(campaign(campaign_id=cid, cpc_micros=3_000))
    out = explain(index, request(), NOW_S, reserve_cpm_units=0)
    assert (out.winner, out.tied, out.runner_up) == (None, ("x", "y"), None)
    assert {v.reason for v in out.verdicts} == {"tie"}
    assert out.clearing_cpm_units == out.top_cpm_units
