from __future__ import annotations

from index.campaign import INACTIVE
from index.index import TargetingIndex
from index.results import TopBids
from tests.index.index_factory import NOW_S, campaign, request


def ids(index: TargetingIndex, **fields: object) -> list[str]:
    return [c.campaign_id for c in index.eligible(request(**fields), NOW_S)]


def test_versions_insert_update_stop() -> None:
    index = TargetingIndex()
    assert index.apply(campaign(campaign_id="a", version=2))
    assert not index.apply(campaign(campaign_id="a", version=2, target_device="iPhone"))
    assert not index.apply(campaign(campaign_id="a", version=1, status=INACTIVE))
    assert len(index) == 1 and ids(index) == ["a"]
    assert index.apply(campaign(campaign_id="a", version=3, target_device="iPhone"))
    assert ids(index) == [] and ids(index, device_type="iPhone") == ["a"]
    assert index.apply(campaign(campaign_id="a", version=4, status=INACTIVE))
    assert len(index) == 0 and ids(index, device_type="iPhone") == []
    stopped = index.get("a")
    assert stopped is not None and stopped.status == INACTIVE and "a" in index
    assert index.get("zzz") is None
    assert index.apply(campaign(campaign_id="a", version=5))
    assert len(index) == 1 and [c.version for c in index.indexed()] == [5]


def test_eligible_sorted_by_bid() -> None:
    index = TargetingIndex()
    index.apply_all(campaign(campaign_id=str(i), cpc_micros=100 * i) for i in range(1, 6))
    assert ids(index) == ["5", "4", "3", "2", "1"]


def test_updates_reach_lists_already_built() -> None:
    index = TargetingIndex()
    assert index.warm() > 0
    index.apply(campaign(campaign_id="mumbai", target_city="Mumbai", target_state="Maharashtra"))
    index.apply(campaign(campaign_id="state", target_state="Maharashtra", cpc_micros=5))
    assert ids(index, city="Mumbai") == ["mumbai", "state"]
    assert ids(index, city="Pune") == ["state"]
    assert ids(index, city="Delhi") == []
    index.apply(campaign(campaign_id="mumbai", version=2, cpc_micros=1))
    assert ids(index, city="Mumbai") == ["state", "mumbai"]
    assert ids(index, city="Delhi") == ["mumbai"]


def test_an_edit_that_keeps_bid_and_location_is_swapped_in_place() -> None:
    index = TargetingIndex()
    assert index.warm() > 0
    mumbai = {"target_city": "Mumbai", "target_state": "Maharashtra", "cpc_micros": 900}
    index.apply(campaign(campaign_id="a", **mumbai))
    index.apply(campaign(campaign_id="b", target_state="Maharashtra", cpc_micros=5))
    # Same bid and place, new audience and a flight that ends sooner: every built list sees the new state.
    index.apply(
        campaign(campaign_id="a", version=2, target_device="iPhone", flight_end_s=NOW_S + 5, **mumbai)
    )
    assert ids(index, city="Mumbai") == ["b"]
    assert ids(index, city="Mumbai", device_type="iPhone") == ["a", "b"]
    later = [c.campaign_id for c in index.eligible(request(city="Mumbai", device_type="iPhone"), NOW_S + 6)]
    assert later == ["b"] and index.ended(NOW_S + 5) == ["a"]
    # The swapped entry is found again when it moves (a new bid) and when it stops.
    index.apply(campaign(campaign_id="a", version=3, target_device="iPhone", cpc_micros=1,
                         **{k: v for k, v in mumbai.items() if k != "cpc_micros"}))  # fmt: skip
    assert ids(index, city="Mumbai", device_type="iPhone") == ["b", "a"]
    index.apply(campaign(campaign_id="a", version=4, status=INACTIVE))
    assert ids(index, city="Mumbai", device_type="iPhone") == ["b"] and len(index) == 1


def test_block_and_unblock() -> None:
    blocked: set[str] = set()
    index = TargetingIndex(blocked=blocked)
    index.apply_all([campaign(campaign_id="a"), campaign(campaign_id="b")])
    index.block("a")
    assert ids(index) == ["b"] and blocked == {"a"}
    blocked.add("b")  # the set is shared: the budget layer may own it
    assert ids(index) == []
    index.unblock("a")
    index.unblock("zzz")
    assert ids(index) == ["a"]


def test_flights_and_prune() -> None:
    index = TargetingIndex()
    index.apply(campaign(campaign_id="later", flight_start_s=NOW_S + 10, flight_end_s=NOW_S + 20))
    index.apply(campaign(campaign_id="over", flight_start_s=NOW_S - 20, flight_end_s=NOW_S))
    index.apply(campaign(campaign_id="now"))
    assert ids(index) == ["now"]
    assert [c.campaign_id for c in index.eligible(request(), NOW_S + 10)] == ["later", "now"]
    assert index.prune(NOW_S) == 1
    assert len(index) == 2 and index.get("over") is not None


def test_pruning_a_few_at_a_time_checks_each_campaign_again() -> None:
    index = TargetingIndex()
    for cid in ("a", "b", "c"):
        index.apply(campaign(campaign_id=cid, flight_start_s=NOW_S - 20, flight_end_s=NOW_S))
    index.apply(campaign(campaign_id="live"))
    ended = index.ended(NOW_S)
    assert sorted(ended) == ["a", "b", "c"] and index.ended(NOW_S - 1) == []
    assert index.prune_ids(ended[:1], NOW_S) == 1
    # Between two steps "b" got a longer flight and "c" was stopped: neither is pruned.
    index.apply(campaign(campaign_id="b", version=2, flight_start_s=NOW_S - 20, flight_end_s=NOW_S + 60))
    index.apply(campaign(campaign_id="c", version=2, status=INACTIVE))
    assert index.prune_ids([*ended, "unknown"], NOW_S) == 0
    assert sorted(c.campaign_id for c in index.indexed()) == ["b", "live"]
    assert sorted(ids(index)) == ["b", "live"]


def test_top_ties_and_second() -> None:
    index = TargetingIndex()
    index.apply_all(
        [
            campaign(campaign_id="t1", cpc_micros=500),
            campaign(campaign_id="t2", cpc_micros=500),
            campaign(campaign_id="t3", cpc_micros=500, target_gender="F"),
            campaign(campaign_id="low", cpc_micros=100),
        ]
    )
    top = index.top(request(), NOW_S)
    assert top is not None
    assert {c.campaign_id for c in top.winners} == {"t1", "t2"}
    assert top.second_cpm_units == top.top_cpm_units
    index.block("t2")
    low = index.get("low")
    assert low is not None
    t1 = index.get("t1")
    assert t1 is not None
    assert index.top(request(), NOW_S) == TopBids((t1,), t1.cpm_units, low.cpm_units)
    assert index.top(request(), NOW_S, reserve_cpm_units=low.cpm_units + 1) == TopBids(
        (t1,), t1.cpm_units, None
    )
    assert index.top(request(), NOW_S, reserve_cpm_units=t1.cpm_units + 1) is None


def test_request_values_nobody_targets_share_a_list() -> None:
    index = TargetingIndex()
    index.apply(campaign(campaign_id="a"))
    for n in range(50):
        assert ids(index, city=f"nowhere{n}", state=f"s{n}", country=f"k{n}") == ["a"]
    assert len(index._lists) == 1


def test_bulk_apply_rebuilds_lists() -> None:
    index = TargetingIndex()
    index.apply(campaign(campaign_id="first", cpc_micros=1))
    index.warm()
    batch = [campaign(campaign_id=f"b{i:04d}", cpc_micros=2 + i % 7) for i in range(1_200)]
    assert index.apply_all(batch) == 1_200
    got = index.eligible(request(city="Pune"), NOW_S)
    assert len(got) == 1_201 and got[-1].campaign_id == "first"
    assert [c.cpm_units for c in got] == sorted((c.cpm_units for c in got), reverse=True)


def test_a_location_newly_targeted_or_no_longer_targeted_is_seen_by_the_next_lookup() -> None:
    # Lookups remember each request location's list key; a value becoming (un)targeted must not leave a
    # stale one: first "Goa" is targeted by nobody (the shared list), then by "goa", then by nobody again.
    index = TargetingIndex()
    index.apply(campaign(campaign_id="all"))
    assert ids(index, city="Goa", state="Goa", country="India") == ["all"]
    index.apply(campaign(campaign_id="goa", target_city="Goa", target_state="Goa", cpc_micros=5_000))
    assert ids(index, city="Goa", state="Goa", country="India") == ["goa", "all"]
    index.apply(
        campaign(campaign_id="goa", version=2, status=INACTIVE, target_city="Goa", target_state="Goa")
    )
    assert ids(index, city="Goa", state="Goa", country="India") == ["all"]
    assert ids(index, city="Pune") == ["all"]
