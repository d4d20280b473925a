"""The serve path's auction with frequency caps, without Redis: a fake store stands for the script."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from adserver.fcap import CapGate, capped_auction
from adserver.params import ANONYMOUS_USER_ID
from adserver.throttle import EvenThrottle, SlotState
from budget.fcap_redis import FrequencyCapStore, Pick
from index.auction import run_auction
from index.campaign import Campaign
from index.explain import LossReason, auction_losses
from index.fcap import FrequencyCap
from index.index import TargetingIndex
from index.throttle import MIN_P, RAMP_DOUBLING, START_P
from tests.index.index_factory import NOW_S, campaign, request

CAP = FrequencyCap(count=2, window_s=3600)


class FakeStore:
    """``FrequencyCapStore.pick_at_cap`` over in-memory counts; records each call's candidates."""

    def __init__(
        self, *, fail: BaseException | None = None, delay_s: float = 0.0, at_cap_for_s: float = 3600.0
    ) -> None:
        self.seen: dict[tuple[str, str], int] = {}
        self.calls: list[list[str]] = []
        self._fail = fail
        self._delay_s = delay_s
        self._at_cap_for_s = at_cap_for_s

    async def pick_at_cap(self, user_id: str, capped: Sequence[Campaign], now_s: float) -> Pick:
        self.calls.append([c.campaign_id for c in capped])
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        if self._fail is not None:
            raise self._fail
        for i, c in enumerate(capped):
            assert c.frequency_cap is not None
            key = (user_id, c.campaign_id)
            if self.seen.get(key, 0) < c.frequency_cap.count:
                self.seen[key] = self.seen.get(key, 0) + 1
                return Pick(i, [self._at_cap_for_s] * i)
        return Pick(-1, [self._at_cap_for_s] * len(capped))


def _gate(store: FakeStore | None, deadline_s: float = 0.02) -> CapGate:
    gate = CapGate(deadline_s=deadline_s)
    gate.store = store  # type: ignore[assignment]  # the fake has the one method the gate calls
    return gate


def _index(*campaigns: Campaign) -> TargetingIndex:
    index = TargetingIndex()
    index.apply_all(campaigns)
    return index


def _bid(cid: str, cpc: int, capped: bool = False) -> Campaign:
    return campaign(campaign_id=cid, cpc_micros=cpc, cpa_micros=0, frequency_cap=CAP if capped else None)


async def _serve(
    gate: CapGate, index: TargetingIndex, user: str = "u1", seed: int = 1
) -> tuple[str, int] | None:
    result = await capped_auction(
        gate, index, request(user_id=user), NOW_S, reserve_cpm_units=1, rng=random.Random(seed)
    )
    return None if result is None else (result.campaign.campaign_id, result.clearing_cpm_units)


async def test_uncapped_winner_costs_no_store_call() -> None:
    store = FakeStore()
    index = _index(_bid("top", 900), _bid("capped", 500, True), _bid("low", 100))
    for seed in range(20):
        got = await capped_auction(
            _gate(store), index, request(user_id="u1"), NOW_S, reserve_cpm_units=1, rng=random.Random(seed)
        )
        want = run_auction(index, request(user_id="u1"), NOW_S, reserve_cpm_units=1, rng=random.Random(seed))
        assert got == want
    assert store.calls == []


async def test_capped_winner_then_the_next_bid_with_the_price_following() -> None:
    store = FakeStore()
    gate = _gate(store)
    a, b, u, v = _bid("a", 900, True), _bid("b", 800, True), _bid("u", 700), _bid("v", 100)
    index = _index(a, b, u, v)
    served = [await _serve(gate, index) for _ in range(6)]
    assert served == [("a", b.cpm_units)] * 2 + [("b", u.cpm_units)] * 2 + [("u", v.cpm_units)] * 2
    # One call per request for the capped ones above the first uncapped, but for those known at their cap:
    # a from the third request on, b from the fifth; the sixth request needs no call at all.
    assert store.calls == [["a", "b"]] * 3 + [["b"]] * 2
    assert gate.stats.checked == 5 and gate.stats.remembered == 1 and gate.stats.moved_on == 4
    assert await _serve(gate, index, user="u2") == ("a", b.cpm_units)  # caps are per user


async def test_at_cap_memory_ends_when_the_window_frees() -> None:
    store = FakeStore(at_cap_for_s=0.0)  # the user's window frees at once: nothing is remembered
    gate = _gate(store)
    index = _index(_bid("a", 900, True), _bid("u", 700))
    served = [await _serve(gate, index) for _ in range(4)]
    assert [s[0] for s in served if s] == ["a", "a", "u", "u"]
    assert store.calls == [["a"]] * 4 and gate.stats.remembered == 0


async def test_anonymous_user_never_gets_a_capped_campaign() -> None:
    store = FakeStore()
    gate = _gate(store)
    index = _index(_bid("a", 900, True), _bid("u", 700))
    assert await _serve(gate, index, user=ANONYMOUS_USER_ID) == ("u", 1)
    assert await _serve(gate, _index(_bid("a", 900, True)), user=ANONYMOUS_USER_ID) is None
    assert store.calls == [] and gate.stats.skipped_anonymous == 2


@pytest.mark.parametrize(
    "store",
    [
        None,
        FakeStore(fail=RedisConnectionError("refused")),
        FakeStore(fail=OSError("reset")),
        FakeStore(delay_s=1),
    ],
    ids=["not-connected", "redis-error", "os-error", "past-deadline"],
)
async def test_store_unavailable_skips_capped_campaigns(store: FakeStore | None) -> None:
    gate = _gate(store)
    index = _index(_bid("a", 900, True), _bid("u", 700), _bid("v", 100))
    for _ in range(5):
        assert await _serve(gate, index) == ("u", 100 * 75)
    assert await _serve(gate, _index(_bid("a", 900, True))) is None
    assert gate.stats.skipped_unavailable == 6
    if store is not None:
        assert len(store.calls) == 3  # after 3 failures in a row, the gate stops asking for a while


class DroppedWriterClient:
    """Stands for a Redis client whose connection lost its writer during its handshake, as redis-py 8.1's
    cluster client's connections did when it closed them under concurrent calls: the script call raises
    ``AttributeError`` from redis-py's own code."""

    def get_encoder(self) -> DroppedWriterClient:  # AsyncScript encodes the script's text with it
        return self

    def encode(self, value: str) -> bytes:
        return value.encode()

    def register_script(self, script: str) -> AsyncScript:
        return AsyncScript(self, script)  # type: ignore[arg-type]  # the fake has what AsyncScript calls

    async def evalsha(self, *args: Any) -> Any:
        await dropped_writer()


async def dropped_writer() -> None:
    """Raise the ``AttributeError`` redis-py raises when it writes on a connection closed under it."""
    await Connection()._send_packed_command([b"PING"])  # no writer: AttributeError inside redis-py


def _cap_store(client: object) -> FrequencyCapStore:
    return FrequencyCapStore(client)  # type: ignore[arg-type]  # a fake client (see its docstring)


@pytest.mark.parametrize(
    "store",
    [_cap_store(DroppedWriterClient()), FakeStore(fail=RedisClusterException("no seed answered"))],
    ids=["attribute-error-inside-redis-py", "redis-cluster-exception"],
)
async def test_a_failing_redis_client_is_an_outage_never_an_error(
    store: FakeStore | FrequencyCapStore, caplog: pytest.LogCaptureFixture
) -> None:
    gate = _gate(store)  # type: ignore[arg-type]  # either store has pick_at_cap
    index = _index(_bid("a", 900, True), _bid("u", 700), _bid("v", 100))
    with caplog.at_level(logging.DEBUG, logger="adserver.fcap"):
        for _ in range(5):
            assert await _serve(gate, index) == ("u", 100 * 75)  # served without the capped campaign
        gate._down_until = 0.0  # past the trip: it asks again, and fails again
        assert await _serve(gate, index) == ("u", 100 * 75)
    assert gate.stats.skipped_unavailable == 6
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if isinstance(store, FakeStore):  # a Redis error: counted, logged at debug, as any outage
        assert warnings == []
    else:  # a failure of the client itself: one traceback, not one per request
        assert len(warnings) == 1 and warnings[0].exc_info is not None
        assert warnings[0].exc_info[0] is AttributeError


async def test_an_error_of_our_own_is_not_taken_for_an_outage() -> None:
    # The same AttributeError raised outside redis-py is a bug: the gate raises it (the edge answers 500).
    gate = _gate(FakeStore(fail=AttributeError("'NoneType' object has no attribute 'campaign_id'")))
    with pytest.raises(AttributeError):
        await _serve(gate, _index(_bid("a", 900, True), _bid("u", 700)))


def _paced(cid: str, cpc: int, mode: str) -> Campaign:
    return campaign(campaign_id=cid, cpc_micros=cpc, cpa_micros=0, pacing_mode=mode)


async def test_even_campaign_drawn_out_sits_the_request_out() -> None:
    gate = _gate(None)
    gate.throttle = EvenThrottle(slot_s=600)
    even, asap, low = _paced("even", 900, "even"), _paced("asap", 500, "asap"), _paced("low", 100, "asap")
    index = _index(even, asap, low)
    assert await _serve(gate, index) == ("even", asap.cpm_units)  # no probability yet: serves freely
    gate.throttle.probability["even"] = 0.0
    assert await _serve(gate, index) == ("asap", low.cpm_units)  # drawn out: the next bid, priced by the next
    gate.throttle.probability["even"] = 0.5
    wins = [(await _serve(gate, index, seed=seed))[0] for seed in range(400)]  # type: ignore[index]
    assert 160 < wins.count("even") < 240
    gate.throttle.probability["asap"] = 0.0  # asap campaigns are never throttled
    assert await _serve(gate, _index(asap, low)) == ("asap", low.cpm_units)


def _state(slot: int, slot_budget: int, slot_spent: int) -> SlotState:
    # A flight of slots 950 to 1049, 10,000,000 left.
    return SlotState(slot, slot_budget, slot_spent, 10_000_000, 0, 950 * 600, 1050 * 600)


def test_throttle_follows_the_slot_state() -> None:
    throttle = EvenThrottle(slot_s=600)
    now_s = 600 * 1000 + 300  # half-way through slot 1000
    throttle.update("none", SlotState.parse([None] * 7), now_s)  # no budget hash: nothing to pace
    assert "none" not in throttle.probability
    throttle.update("c", _state(1000, 1_000_000, 1_000_000), now_s)  # the slot's budget spent: the floor
    assert throttle.probability["c"] == MIN_P
    # First sight: the rate is unknown, a new campaign serves at once (START_P).
    throttle.update("d", _state(1000, 1_000_000, 500_000), now_s)
    ramp = min(1.0, START_P * 2 ** (1 / 600 / RAMP_DOUBLING))
    assert throttle.probability["d"] == pytest.approx(ramp)
    # Earned 10,000 at that probability: the rate at p 1; what is left (490,000) is spread over what is left
    # of the slot before the 2% lead (0.98 - 301/600 of it), a 600th at a time.
    throttle.update("d", _state(1000, 1_000_000, 510_000), now_s + 1)
    rate = 10_000 / ramp
    assert throttle.probability["d"] == pytest.approx(490_000 / 600 / (0.98 - 301 / 600) / rate)
    # The next slot, not rolled in Redis yet: its budget by the scripts' rule, nothing spent yet, and the
    # rate estimate carried over (no observation across the boundary): the new budget at an even pace.
    throttle.update("d", _state(1000, 1_000_000, 1_000_000), 600 * 1001)
    budget = 10_000_000 // 49  # 49 slots of the flight left
    assert throttle.probability["d"] == pytest.approx(budget / 600 / 0.98 / rate)
    assert SlotState(1000, 1_000_000, 5, 10_000_000, 0, 950 * 600, 1050 * 600).at(1001, 600) == (budget, 0)


async def test_passed_over_campaigns_are_named_for_the_loss_reasons() -> None:
    store = FakeStore()
    gate = _gate(store)
    gate.throttle = EvenThrottle(slot_s=600)
    even, capped, low = _paced("even", 900, "even"), _bid("capped", 800, True), _paced("low", 100, "asap")
    index = _index(even, capped, low)
    gate.throttle.probability["even"] = 0.0
    for _ in range(CAP.count):  # the user reaches capped's cap
        await _serve(gate, index)
    sat_out: dict[str, LossReason] = {}
    result = await capped_auction(
        gate, index, request(user_id="u1"), NOW_S, reserve_cpm_units=1, rng=random.Random(1), sat_out=sat_out
    )
    assert result is not None and result.campaign.campaign_id == "low"
    assert sat_out == {"even": "throttled", "capped": "capped"}
    losses = auction_losses(
        index, request(user_id="u1"), NOW_S, served=low, reserve_cpm_units=1, sat_out=sat_out
    )
    assert [(loss.campaign_id, loss.reason) for loss in losses.losses] == [
        ("even", "throttled"),
        ("capped", "capped"),
    ]
    assert losses.runner_up is None  # neither priced the auction
