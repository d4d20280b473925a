"""Feedback charging on the real Redis and Kafka, the spend ledger and reconciliation on PostgreSQL.

Campaigns come in through the production path (producer → Ad Manager); tokens are issued with the
server's signer, as the serve route does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

import adserver.feedback as feedback_module
from adplatform.config import Config
from adplatform.kafka import make_producer, read_to_end
from adplatform.redis_client import RedisClient, blocked_members, open_bounded
from adplatform.sandbox import wipe_claimed
from adplatform.wire import feedback_decoder
from adserver.feedback import SUCCESS, FeedbackError, FeedbackService
from adserver.token import RequestToken, TokenSigner
from budget.budget_redis import BudgetStore, Debit, DebitRequest
from budget.ledger import run_ledger
from budget.reconcile import Reconciler
from devstack.stack import Paths, start_redis, stop_service
from index.campaign import Campaign
from index.pacing import SystemClock
from ingest.csvfile import rebase_dates
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.manager import run_manager
from ingest.producer import produce_file
from tests.adserver.test_token_issue import legacy_issue

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

CPC_MICROS = 700
VIEW = b'{"view": 1, "click": 0, "acquisition": 0}'  # a view costs 0: no budget cap interferes
CPA_MICROS = 20_000


def tiny_campaign_rows(count: int, budget: str, *, hours: int = 2) -> list[dict[str, str]]:
    """``count`` New campaigns targeting everyone, with a fixed budget and prices, live from now."""
    now = datetime.now(UTC)
    rows = []
    for row in generate_campaigns(count, 11, now)[:count]:
        row = dict(row)
        row.update(
            campaign_id=f"tiny-{uuid.uuid4().hex[:12]}",
            action="New Campaign",
            budget=budget,
            cpc="0.0007",
            cpa="0.02",
            date_range="{'start': '2025-01-01', 'end': '2025-01-01'}",
            time_range=f"{{'start': '0:00:00', 'end': '{hours}:00:00'}}",
        )
        rows.append(rebase_dates(row, now))
    return rows


async def ingest(config: Config, rows: list[dict[str, str]], tmp_path: Path) -> None:
    path = tmp_path / f"campaigns-{uuid.uuid4().hex[:6]}.csv"
    write_campaigns_csv(path, rows)
    await produce_file(config, path)
    stats = await run_manager(config, until_idle=True, idle_timeout_s=60)
    assert stats.rejected == 0


@dataclass
class Rig:
    config: Config
    service: FeedbackService
    signer: TokenSigner
    budgets: BudgetStore
    redis: RedisClient
    campaigns: dict[str, Campaign]
    producer: AIOKafkaProducer

    def token(self, campaign_id: str, *, user: str = "u1") -> str:
        return self.signer.issue(
            RequestToken(
                nonce=uuid.uuid4().hex[:16],
                campaign_id=campaign_id,
                campaign_version=1,
                issued_ms=int(SystemClock().now() * 1000),
                user_id=user,
                clearing_cpm_units=75 * CPC_MICROS + 5 * CPA_MICROS,
                auction_cpc_micros=CPC_MICROS,
                auction_cpa_micros=CPA_MICROS,
            )
        )


async def _campaigns(pool: asyncpg.Pool) -> dict[str, Campaign]:
    from budget.reconcile import campaign_from_row

    return {r["campaign_id"]: campaign_from_row(r) for r in await pool.fetch("SELECT * FROM online_ads.ads")}


@pytest.fixture
async def rig(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[Rig]:
    await ingest(topics, tiny_campaign_rows(5, "0.01"), tmp_path)  # 10,000 micros each
    client = open_bounded(
        topics.redis_url, max_connections=64, timeout_s=5, socket_timeout_s=10, connect_timeout_s=5
    )
    producer = make_producer(topics, linger_ms=5)
    await producer.start()
    campaigns = await _campaigns(pg)
    budgets = BudgetStore(client, slot_s=topics.slot_s)
    signer = TokenSigner(topics.token_keys, ttl_s=topics.token_ttl_s)
    service = FeedbackService(
        signer=signer,
        budgets=budgets,
        producer=producer,
        topic=topics.topics.feedback,
        lookup=campaigns.get,
        clock=SystemClock(),
        dedup_ttl_s=3600,
        publish_timeout_s=3,
    )
    try:
        yield Rig(topics, service, signer, budgets, client, campaigns, producer)
    finally:
        await producer.stop()
        await client.aclose()


async def feedback_events(config: Config) -> list[tuple[str, str, int]]:
    out = []
    for r in await read_to_end(config.kafka_bootstrap, config.topics.feedback):
        e = feedback_decoder.decode(r.value or b"")
        out.append((e.event_id, e.campaign_id, e.expenditure_micros))
    return out


async def assert_conserved(rig: Rig, pg: asyncpg.Pool) -> dict[str, int]:
    """Redis = PostgreSQL (after the ledger and reconciliation) = sum of the events, per campaign."""
    await run_ledger(rig.config, until_idle=True, timeout_s=60)
    reconciler = Reconciler(rig.config, pg, rig.budgets)
    await reconciler.repair(settle_s=0.1)
    assert await reconciler.diffs() == []
    events = await feedback_events(rig.config)
    by_event = {eid: (cid, m) for eid, cid, m in events}  # an event delivered twice counts once
    kafka: dict[str, int] = {}
    for cid, micros in by_event.values():
        kafka[cid] = kafka.get(cid, 0) + micros
    redis_spent = {cid: s for cid, s in (await rig.budgets.spent_all()).items() if cid in rig.campaigns}
    rows = await pg.fetch(
        "SELECT campaign_id, spent * 1000000 AS spent, budget * 1000000 AS budget FROM online_ads.ads"
    )
    pg_spent = {r["campaign_id"]: int(r["spent"]) for r in rows}
    for r in rows:
        assert int(r["spent"]) <= int(r["budget"]), "overspend in PostgreSQL"
    for cid, campaign in rig.campaigns.items():
        assert redis_spent.get(cid, 0) == pg_spent.get(cid, 0) == kafka.get(cid, 0), cid
        assert redis_spent.get(cid, 0) <= campaign.budget_micros, "overspend in Redis"
    return redis_spent


async def test_200_concurrent_clients_never_overspend_and_charges_equal_events(
    rig: Rig, pg: asyncpg.Pool
) -> None:
    ids = list(rig.campaigns)
    gate = asyncio.Semaphore(200)
    charged_ok = 0

    async def client(i: int) -> None:
        nonlocal charged_ok
        async with gate:
            body = b'{"view": 1, "click": 1, "acquisition": %d}' % (i % 7 == 0)
            await rig.service.handle(rig.token(ids[i % len(ids)], user=f"u{i}"), body)
            charged_ok += 1

    await asyncio.gather(*(client(i) for i in range(2000)))
    assert charged_ok == 2000
    spent = await assert_conserved(rig, pg)
    # Tiny budgets: every campaign ran out of its slot budget (the pacing cap), and not one micro beyond.
    for cid, c in rig.campaigns.items():
        state = await rig.budgets.get(cid)
        assert state["slot_spent"] == state["slot_budget"] > 0
        assert spent[cid] <= c.budget_micros
    assert sum(e[2] for e in await feedback_events(rig.config)) == rig.service.counters.charged_micros
    blocked = await blocked_members(rig.redis)
    assert set(rig.campaigns) <= blocked


async def test_same_feedback_ten_times_is_charged_once_and_tampering_charges_nothing(
    rig: Rig, pg: asyncpg.Pool
) -> None:
    cid = next(iter(rig.campaigns))
    token = rig.token(cid)
    for _ in range(10):
        assert (
            await rig.service.handle(token, b'{"view": 1, "click": 1, "acquisition": 0}')
            == b'{"status":"Success"}'
        )
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    kid, sealed = token.split(".")
    forged = [
        f"{kid}.{sealed[:-2]}{'A' if sealed[-2] != 'A' else 'B'}{sealed[-1]}",  # tampered ciphertext or tag
        f"{kid}.{'A' if sealed[0] != 'A' else 'B'}{sealed[1:]}",  # tampered nonce
        f"{kid}.{sealed}=",  # another spelling of the same bytes: another dedup key, so refused
        f"zz9.{sealed}",  # unknown key id
        f"{kid}.{sealed}.{sealed[:22]}",  # a legacy shape with no valid MAC
        "not-a-token",
        "",
    ]
    for bad in forged:
        with pytest.raises(FeedbackError) as info:
            await rig.service.handle(bad, b'{"view": 1, "click": 1, "acquisition": 1}')
        assert info.value.status == 404
    stale = rig.signer.issue(
        RequestToken(
            nonce="stale", campaign_id=cid, campaign_version=1,
            issued_ms=int(SystemClock().now() * 1000) - (rig.config.token_ttl_s + 60) * 1000, user_id="u1",
            clearing_cpm_units=1, auction_cpc_micros=CPC_MICROS, auction_cpa_micros=CPA_MICROS,
        )
    )  # fmt: skip
    with pytest.raises(FeedbackError) as info:
        await rig.service.handle(stale, b'{"view": 1, "click": 1, "acquisition": 1}')
    assert info.value.status == 404
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    with pytest.raises(FeedbackError) as bad_body:
        await rig.service.handle(rig.token(cid), b'{"view": 2}')
    assert bad_body.value.status == 422
    await assert_conserved(rig, pg)


async def test_legacy_tokens_are_charged_once_until_they_expire(rig: Rig, pg: asyncpg.Pool) -> None:
    """A request_id issued before tokens were sealed (HMAC-signed, same key ids) is still charged, once;
    after the token TTL it is refused like any expired one."""
    cid = next(iter(rig.campaigns))
    now_ms = int(SystemClock().now() * 1000)
    token = RequestToken(
        nonce="legacy", campaign_id=cid, campaign_version=1, issued_ms=now_ms, user_id="u1",
        clearing_cpm_units=1, auction_cpc_micros=CPC_MICROS, auction_cpa_micros=CPA_MICROS,
    )  # fmt: skip
    old = legacy_issue(rig.config.token_keys[0], token)
    assert old.count(".") == 2
    for _ in range(3):
        assert await rig.service.handle(old, b'{"click": 1}') == b'{"status":"Success"}'
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    expired_ms = now_ms - (rig.config.token_ttl_s + 60) * 1000
    expired = legacy_issue(rig.config.token_keys[0], msgspec.structs.replace(token, issued_ms=expired_ms))
    with pytest.raises(FeedbackError) as info:
        await rig.service.handle(expired, b'{"click": 1}')
    assert info.value.status == 404
    assert (await rig.budgets.get(cid))["spent"] == CPC_MICROS
    await assert_conserved(rig, pg)


async def test_one_ticks_requests_share_a_batch_and_each_gets_its_own_answer(
    rig: Rig, pg: asyncpg.Pool
) -> None:
    """Group commit: fresh, repeated (even inside the same batch) and unknown-campaign requests issued in
    one event-loop iteration go through one debit script call and one publish, yet each request gets
    the answer it would get alone."""
    cid = next(iter(rig.campaigns))
    fresh = [rig.token(cid, user=f"f{i}") for i in range(40)]
    repeated = fresh[:5]  # the same (request, action) twice in one batch: charged once
    unknown = [rig.token(f"nope-{uuid.uuid4().hex[:6]}") for _ in range(3)]
    body = b'{"view": 1, "click": 0, "acquisition": 0}'  # a view costs 0: no budget cap interferes
    click = b'{"view": 1, "click": 1, "acquisition": 0}'
    batches_before = rig.service.counters.batches
    results = await asyncio.gather(
        *(rig.service.handle(t, click) for t in fresh[:10]),
        *(rig.service.handle(t, body) for t in fresh[10:]),
        *(rig.service.handle(t, click) for t in repeated),
        *(rig.service.handle(t, click) for t in unknown),
        return_exceptions=True,
    )
    assert rig.service.counters.batches - batches_before == 1
    assert results[:45] == [b'{"status":"Success"}'] * 45
    for outcome in results[45:]:
        assert isinstance(outcome, FeedbackError) and outcome.status == 503
    assert rig.service.counters.duplicates == 5
    events = await feedback_events(rig.config)
    assert len(events) == 40 and len({e[0] for e in events}) == 40
    state = await rig.budgets.get(cid)
    assert state["spent"] == min(10 * CPC_MICROS, state["slot_budget"])  # tiny budgets: the slot caps
    await assert_conserved(rig, pg)


async def test_requests_arriving_during_a_debit_form_the_next_batch(
    rig: Rig, pg: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The debit gate: a worker has one debit call in Redis at a time, and the requests that arrive
    meanwhile (one per event-loop iteration here) wait for it and go together in the next call, instead
    of one call (and one fsync) each."""
    cid = next(iter(rig.campaigns))
    real = rig.budgets.debit_many
    in_flight, most, sizes = 0, 0, []

    async def watched(requests: list[DebitRequest], **kw: int | float) -> list[Debit]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        sizes.append(len(requests))
        try:
            return await real(requests, **kw)  # type: ignore[arg-type]
        finally:
            in_flight -= 1

    monkeypatch.setattr(rig.budgets, "debit_many", watched)
    # The gate's bound (tested below) is for a call that hangs; a healthy call on a loaded machine can take
    # longer than 50 ms (on the cluster each debit also waits for its replica), and this test is about the
    # gate's batching, not its bound.
    monkeypatch.setattr(feedback_module, "DEBIT_GATE_WAIT_S", 30.0)
    tasks = []
    for i in range(60):
        tasks.append(asyncio.ensure_future(rig.service.handle(rig.token(cid, user=f"w{i}"), VIEW)))
        await asyncio.sleep(0)  # the next request arrives in the next iteration of the loop
    assert await asyncio.gather(*tasks) == [b'{"status":"Success"}'] * 60
    assert most == 1 and sum(sizes) == 60
    assert len(sizes) < 30, sizes  # one per iteration would be 60
    await assert_conserved(rig, pg)


async def test_a_debit_call_that_hangs_does_not_hold_back_the_next_batches(
    rig: Rig, pg: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate waits at most DEBIT_GATE_WAIT_S: behind a call that hangs (a cut network until the
    socket timeout), the next batches go to Redis on their own instead of queueing behind it."""
    cid = next(iter(rig.campaigns))
    real = rig.budgets.debit_many
    calls = 0

    async def first_hangs(requests: list[DebitRequest], **kw: int | float) -> list[Debit]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.5)
        return await real(requests, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.budgets, "debit_many", first_hangs)
    stuck = asyncio.ensure_future(rig.service.handle(rig.token(cid, user="stuck"), VIEW))
    await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    later = [rig.service.handle(rig.token(cid, user=f"l{i}"), VIEW) for i in range(10)]
    assert await asyncio.gather(*later) == [b'{"status":"Success"}'] * 10
    assert asyncio.get_running_loop().time() - started < 1.0 and not stuck.done()
    assert await stuck == b'{"status":"Success"}'
    await assert_conserved(rig, pg)


async def test_each_batch_is_timed_stage_by_stage(
    rig: Rig, pg: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/metrics``' feedback stages: a debit call held 20 ms shows in the debit stage of its batch and in
    the gate stage of the batch formed behind it; each batch is published once and its size counted."""
    cid = next(iter(rig.campaigns))
    real = rig.budgets.debit_many
    held, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def first_held(requests: list[DebitRequest], **kw: int | float) -> list[Debit]:
        nonlocal calls
        calls += 1
        if calls == 1:
            held.set()
            await release.wait()
        return await real(requests, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.budgets, "debit_many", first_held)
    counters = rig.service.counters
    before = {stage: (h.count, h.sum) for stage, h in counters.stages.items()}
    sizes_before = (counters.batch_requests.count, counters.batch_requests.sum)
    first = asyncio.ensure_future(rig.service.handle(rig.token(cid, user="first"), VIEW))
    await held.wait()  # its batch is in the debit call now
    behind = [asyncio.ensure_future(rig.service.handle(rig.token(cid, user=f"b{i}"), VIEW)) for i in range(5)]
    await asyncio.sleep(0.02)  # the second batch waits at the gate (which gives up after 50 ms)
    release.set()
    assert await asyncio.gather(first, *behind) == [SUCCESS] * 6
    grew = {
        stage: (h.count - before[stage][0], h.sum - before[stage][1]) for stage, h in counters.stages.items()
    }
    assert {stage: n for stage, (n, _) in grew.items()} == {"gate": 2, "debit": 2, "publish": 2}
    assert grew["debit"][1] >= 0.02 and grew["gate"][1] >= 0.015 and grew["publish"][1] > 0
    assert (counters.batch_requests.count, counters.batch_requests.sum) == (
        sizes_before[0] + 2,
        sizes_before[1] + 6,
    )
    await assert_conserved(rig, pg)


async def test_an_unacknowledged_batch_is_refunded_and_answered_503(rig: Rig, pg: asyncpg.Pool) -> None:
    """The event log refuses (here: a topic that does not exist, so no acknowledgement ever comes): every
    request of the batch gets 503 after the publish deadline, a duplicate with it, and every debit is
    refunded, so a retry once the log is back is charged exactly once."""
    ids = list(rig.campaigns)[:4]
    tokens = [rig.token(cid) for cid in ids]  # one click each: within every tiny slot budget
    click = b'{"view": 1, "click": 1, "acquisition": 0}'
    nowhere = f"{rig.config.topics.prefix}no-such-topic"
    broken = FeedbackService(
        signer=rig.signer, budgets=rig.budgets, producer=rig.producer, topic=nowhere,
        lookup=rig.campaigns.get, clock=SystemClock(), dedup_ttl_s=3600, publish_timeout_s=1,
    )  # fmt: skip
    # The first token is sent twice in the batch: its duplicate must share the refusal, not get a 200.
    results = await asyncio.gather(
        *(broken.handle(t, click) for t in [*tokens, tokens[0]]), return_exceptions=True
    )
    assert len(results) == 5 and broken.counters.duplicates == 1
    for outcome in results:
        assert isinstance(outcome, FeedbackError) and outcome.status == 503
        assert b"event log unavailable" in outcome.body
    assert [(await rig.budgets.get(cid))["spent"] for cid in ids] == [0] * 4
    assert broken.counters.unavailable == 4 and broken.counters.accepted == 0
    for t in tokens:  # the retry, against the working log
        assert await rig.service.handle(t, click) == b'{"status":"Success"}'
    assert [(await rig.budgets.get(cid))["spent"] for cid in ids] == [CPC_MICROS] * 4
    await assert_conserved(rig, pg)


@pytest.mark.exclusive
@pytest.mark.single_node(
    reason="stops and restarts the single-node stack's Redis (a master failover on the cluster: "
    "tests/budget/test_redis_cluster.py, tests/devstack/test_cluster_chaos.py)"
)
async def test_conservation_holds_across_a_redis_restart_and_a_wipe(rig: Rig, pg: asyncpg.Pool) -> None:
    ids = list(rig.campaigns)

    async def burst(n: int, tag: str) -> tuple[int, int]:
        ok = unavailable = 0
        for i in range(n):
            try:
                await rig.service.handle(
                    rig.token(ids[i % len(ids)], user=f"{tag}{i}"), b'{"view":1,"click":1}'
                )
                ok += 1
            except FeedbackError as exc:
                assert exc.status == 503
                unavailable += 1
        return ok, unavailable

    assert (await burst(20, "a"))[0] == 20
    # Restart: AOF (fsync always) keeps every charge.
    before = await rig.budgets.spent_all()
    stop_service(rig.config, "redis")
    ok, unavailable = await burst(3, "down")
    assert (ok, unavailable) == (0, 3)
    start_redis(Paths(rig.config.stack_dir))
    await rig.redis.ping()
    assert {k: v for k, v in (await rig.budgets.spent_all()).items() if k in before} == before
    assert (await burst(20, "b"))[0] == 20
    # Wipe: feedback is refused until reconciliation rebuilds the budgets from the books.
    await wipe_claimed(rig.redis)
    ok, unavailable = await burst(5, "wiped")
    assert (ok, unavailable) == (0, 5)
    await run_ledger(rig.config, until_idle=True, timeout_s=60)
    repaired = await Reconciler(rig.config, pg, rig.budgets).repair(settle_s=0.1)
    assert {d.campaign_id for d in repaired} >= set(ids)
    assert (await burst(20, "c"))[0] == 20
    await assert_conserved(rig, pg)


async def test_after_a_wipe_an_update_does_not_reset_spend_it_waits_for_reconciliation(
    rig: Rig, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    """A campaign's new state arriving while Redis has lost its data must not create its budget with spent
    0 (it could spend its budget again): it stays refused until reconciliation rebuilds it from the books,
    then has the new budget and the true spend, and a retry of a charge from before the loss is still a
    duplicate (its de-duplication key is restored), booked or not yet booked by the ledger."""
    cid = next(iter(rig.campaigns))
    raised = tiny_campaign_rows(1, "0.1")[0] | {"campaign_id": cid, "action": "Update Campaign"}
    await ingest(rig.config, [raised], tmp_path)  # a slot budget of 8,333: the clicks below fit
    booked = [rig.token(cid, user=f"w{i}") for i in range(2)]
    for request_id in booked:
        await rig.service.handle(request_id, b'{"click": 1}')
    await run_ledger(rig.config, until_idle=True, timeout_s=60)
    unbooked = rig.token(cid, user="w2")
    await rig.service.handle(unbooked, b'{"click": 1}')
    spent = (await rig.budgets.get(cid))["spent"]
    assert spent == 3 * CPC_MICROS
    await wipe_claimed(rig.redis)
    update = tiny_campaign_rows(1, "0.2")[0] | {"campaign_id": cid, "action": "Update Campaign"}
    await ingest(rig.config, [update], tmp_path)
    assert await rig.budgets.get(cid) == {}
    with pytest.raises(FeedbackError) as refused:
        await rig.service.handle(rig.token(cid, user="during"), b'{"click": 1}')
    assert refused.value.status == 503
    await Reconciler(rig.config, pg, rig.budgets).repair(settle_s=0.1)
    state = await rig.budgets.get(cid)
    assert (state["spent"], state["budget"]) == (spent, 200_000)
    for request_id in [*booked, unbooked]:  # retried: answered, not charged again
        assert await rig.service.handle(request_id, b'{"click": 1}') == SUCCESS
    assert (await rig.budgets.get(cid))["spent"] == spent
    await rig.service.handle(rig.token(cid, user="after"), b'{"click": 1}')
    assert (await rig.budgets.get(cid))["spent"] == spent + CPC_MICROS
    rig.campaigns.update(await _campaigns(pg))  # the books now hold the updated budget
    await assert_conserved(rig, pg)


async def test_pacing_keeps_each_slot_within_its_budget_and_rolls_leftover(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    config = replace(topics, slot_s=2)
    # One campaign, budget 0.1 (100,000 micros), a 2-hour flight: thousands of 2-second slots.
    await ingest(config, tiny_campaign_rows(1, "0.1"), tmp_path)
    campaign = next(iter((await _campaigns(pg)).values()))
    budgets = BudgetStore(redis_client, slot_s=config.slot_s)
    slots: dict[int, tuple[int, int]] = {}
    clock = SystemClock()
    deadline = clock.now() + 7
    i = 0
    while clock.now() < deadline:
        now = clock.now()
        debit = await budgets.debit(campaign.campaign_id, f"e{i}", 7, now_s=now, dedup_ttl_s=60)
        state = await budgets.get(campaign.campaign_id)
        if state["slot"] == debit.slot:
            slots[debit.slot] = (state["slot_budget"], state["slot_spent"])
        i += 1
        await asyncio.sleep(0.002)
    assert len(slots) >= 3
    for slot_budget, slot_spent in slots.values():
        assert slot_spent <= slot_budget
    budgets_in_order = [slots[s][0] for s in sorted(slots)]
    # Each slot spends its budget exactly (7-micro steps are capped), so the next slot's budget is the
    # remainder over the remaining slots: never less than the one before (the leftover rolls forward).
    assert budgets_in_order == sorted(budgets_in_order)
    state = await budgets.get(campaign.campaign_id)
    assert state["spent"] <= campaign.budget_micros
