"""``make chaos``: fault scenarios on the real local stack under a bounded load, checked against the
design's invariants, printed as one table.

Each scenario: its own database (``<database>_chaos_<tag>``), Redis logical database and topics, all
dropped when it ends (the user's data is never touched), campaigns (some with tiny budgets) through
producer → manager, the platform's processes in the background, the user simulator at a fixed rate on
127.0.0.1 while the fault is injected and healed, then the processes are stopped and every consumer
drained, and the books
are checked: events lost (acknowledged feedback missing from ``ad-feedback``), events duplicated (in the
archive), overspend (Redis or PostgreSQL above a budget), and conservation (Redis = PostgreSQL = archive).
``--fast`` shortens every hold and leaves the archive out (column "n/a") except in the scenario that kills
the archive job, which is how the test suite runs the scenarios; a full run archives in every scenario.

The load columns: requests/s answered without error and the error share over the whole run, and the same
while the fault lasts (from its injection until it is healed, at least ``MIN_FAULT_WINDOW_S``).
``--topology cluster`` runs the cluster stack's scenarios (``loadtest.chaos_cluster``) on the same rig,
checks and table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError

from adplatform.cli.common import script_main
from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, read_to_end, wait_for_topics
from adplatform.pidfile import children
from adplatform.ports import free_port
from adplatform.redis_client import open_redis
from adplatform.sandbox import Sandbox, close_sandbox, new_suffix, open_sandbox, wipe_claimed
from adplatform.wire import feedback_decoder
from budget.budget_redis import BudgetStore
from devstack import stack
from ingest.generator import generate_campaigns, generate_users, write_campaigns_csv
from ingest.manager import run_manager
from ingest.producer import produce_file
from ingest.users_postgres import write_users
from loadtest.books import archive_books
from loadtest.faultproxy import FaultProxy
from loadtest.simulator import SimSummary, Simulator, load_users
from loadtest.supervisor import Supervisor
from loadtest.workers import wait_workers_ready

WORKERS = 2
#: The shortest window the "during the fault" columns cover (a kill is over at once; its effects are not).
MIN_FAULT_WINDOW_S = 5.0


@dataclass
class Result:
    scenario: str
    requests_per_s: float = 0.0
    error_share: float = 0.0
    faults: str = ""
    lost: int = 0
    duplicated: int = 0
    overspend: int = 0
    redis_micros: int = 0
    postgres_micros: int = 0
    archive_micros: int | None = None
    notes: list[str] = field(default_factory=list)
    #: Requests/s answered without error, and the error share, while the fault lasted.
    fault_requests_per_s: float = 0.0
    fault_error_share: float = 0.0

    @property
    def conserved(self) -> bool:
        archive_ok = self.archive_micros is None or self.archive_micros == self.redis_micros
        return self.redis_micros == self.postgres_micros and archive_ok

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.overspend == 0 and self.conserved


@dataclass(frozen=True)
class Timing:
    load_s: float
    hold_s: float
    postgres_hold_s: float
    rate: float


FULL = Timing(load_s=60, hold_s=10, postgres_hold_s=30, rate=100)
FAST = Timing(load_s=14, hold_s=3, postgres_hold_s=6, rate=60)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


class Rig:
    """One scenario's world: its database, Redis database and topics, its processes, its load. The
    single-node stack's; ``loadtest.chaos_cluster.ClusterRig`` changes what runs where, not the checks."""

    #: Seed of the generated campaigns (a rig of its own Redis database may reuse their ids).
    campaign_seed = 17

    def __init__(
        self, base: Config, env: dict[str, str], name: str, timing: Timing, *, streaming_archive: bool
    ) -> None:
        tag = f"chaos{uuid.uuid4().hex[:6]}-"
        self.name = name
        self.timing = timing
        self.streaming_archive = streaming_archive
        self.stores: Sandbox | None = None
        #: The scenario's files (its campaign file, its archive), removed by ``close``.
        self.work_dir = base.stack_dir / "chaos" / tag.rstrip("-")
        self.config = base.namespaced(tag, archive_dir=self.work_dir / "archive")
        self.env = {
            **env,
            "ADP_TOPIC_PREFIX": tag,
            "ADP_GROUP_PREFIX": tag,
            "ADP_ARCHIVE_DIR": str(self.config.archive_dir),
            "ADP_PG_COMMAND_TIMEOUT_S": "5",
        }
        self.sup = Supervisor(base.stack_dir, env=self.env, tag="chaos")
        self.faults: list[str] = []
        self.proxies: dict[str, FaultProxy] = {}
        #: The ad-server instances: name → port (a free one each: another process may hold any fixed port).
        self.hosts: dict[str, int] = {"adserver": free_port()}
        #: When the fault began and ended (monotonic seconds).
        self.fault_window = (0.0, 0.0)
        #: What the fault saw (how long a promotion took...), for the result's notes.
        self.notes: list[str] = []
        self.campaign_ids: list[str] = []

    # --- set-up and tear-down -------------------------------------------------------------------------

    @classmethod
    async def open(cls, base: Config, name: str, timing: Timing, *, streaming_archive: bool) -> Rig:
        """A rig on stores of its own beside ``base``'s (nothing of ``base``'s is read or written)."""
        stores = await open_sandbox(base, new_suffix("chaos"))
        rig = cls(stores.config, stores.env, name, timing, streaming_archive=streaming_archive)
        rig.stores = stores
        return rig

    async def close(self) -> None:
        """Drop what the scenario made: its topics (if Kafka answers), its database, its Redis database,
        its files."""
        with contextlib.suppress(KafkaError, OSError, TimeoutError):  # Kafka down: the topics stay
            await delete_topics(self.config)
        await self.close_stores()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    async def close_stores(self) -> None:
        if self.stores is not None:
            await close_sandbox(self.stores)

    async def prepare(self) -> None:
        config = self.config
        await ensure_topics(config)
        await wait_for_topics(config, config.topics.all())
        rows = generate_campaigns(600, self.campaign_seed, datetime.now(UTC))
        self.campaign_ids = sorted({row["campaign_id"] for row in rows})
        for i, row in enumerate(rows):
            if i % 3 == 0:
                row["budget"] = "0.02"  # tiny: runs out under load, so the caps are exercised
        config.archive_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / f"{self.name}-campaigns.csv"
        write_campaigns_csv(path, rows)
        await produce_file(config, path)
        await run_manager(config, until_idle=True, idle_timeout_s=120)
        await write_users(config.pg_dsn, generate_users(500, 17))

    def start(self) -> None:
        sup = self.sup
        manager_env, adserver_env = {}, {}
        if "manager-postgres" in self.proxies:
            manager_env["ADP_PG_DSN"] = _via(self.config.pg_dsn, self.proxies["manager-postgres"].port)
        if "adserver-redis" in self.proxies:
            adserver_env["ADP_REDIS_URL"] = _via(self.config.redis_url, self.proxies["adserver-redis"].port)
        sup.start("manager", "manager", env=manager_env)
        sup.start("served-writer", "served-writer")
        sup.start("ledger", "ledger")
        sup.start("pacer", "pacer")
        sup.start("reconciler", "reconcile", "--interval", "2")
        for host in self.hosts:
            self.start_host(host, env=adserver_env)
        if self.streaming_archive:
            sup.start("archive", *self.archive_args(until_idle=False))

    def start_host(self, host: str, *, env: dict[str, str] | None = None) -> None:
        port = self.hosts[host]
        self.sup.start(host, "serve", "--workers", str(WORKERS), "--port", str(port), env=env)

    def archive_args(self, *, until_idle: bool) -> tuple[str, ...]:
        """The archive job's ``adplatform`` arguments: streaming every 2 s, or once to the end."""
        return ("archive", "run", "--until-idle") if until_idle else ("archive", "run", "--trigger-s", "2")

    def host_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.hosts.values()]

    async def wait_ready(self, timeout_s: float = 120) -> None:
        try:
            for url in self.host_urls():
                await wait_workers_ready(url, WORKERS, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise RuntimeError(f"{self.name}: {exc}; see .stack/logs/chaos/") from exc

    # --- load and checks -----------------------------------------------------------------------------

    async def load(self, fault: Callable[[Rig], Awaitable[None]]) -> SimSummary:
        users = await load_users(self.config.pg_dsn)
        urls = self.host_urls()
        # Several hosts: clients spread over them and retry a 503 or a dead connection on another one.
        sim = Simulator(users, ad_url=urls[0], rate=self.timing.rate, concurrency=32,
                        hosts=urls if len(urls) > 1 else ())  # fmt: skip
        run = asyncio.ensure_future(sim.run(self.timing.load_s))
        await asyncio.sleep(self.timing.load_s / 4)
        began = time.monotonic()
        await fault(self)
        healed = max(time.monotonic(), began + MIN_FAULT_WINDOW_S)
        summary = await run
        self.fault_window = (began, min(healed, time.monotonic()))  # a fault outlasting the load: its part
        return summary

    def drain(self) -> None:
        sup = self.sup
        for host in self.hosts:
            sup.stop(host)
        for name in ("reconciler", "pacer", "manager", "ledger", "served-writer"):
            sup.stop(name)
        sup.stop("archive", timeout_s=180)
        env = dict(os.environ, **self.env)
        # The consumers drain their own topics into their own tables, side by side; reconciliation reads
        # what the ledger booked, so it runs once they are done.
        consumers: list[tuple[str, ...]] = [
            ("ledger", "--until-idle", "--timeout", "120"),
            ("served-writer", "--until-idle", "--timeout", "120"),
        ]
        if self.streaming_archive:
            consumers.append(self.archive_args(until_idle=True))
        for group in (consumers, [("reconcile",)]):
            with contextlib.ExitStack() as logs:
                running = []
                for args in group:
                    log = logs.enter_context(tempfile.TemporaryFile("w+"))  # a pipe could fill and stall it
                    running.append((args, log, subprocess.Popen(
                        [sys.executable, "-m", "adplatform.cli", *args], env=env,
                        stdout=subprocess.DEVNULL, stderr=log, text=True,
                    )))  # fmt: skip
                    logs.callback(running[-1][2].kill)  # on the way out: none outlives an interruption
                failures = []
                for args, log, proc in running:
                    try:
                        proc.wait(timeout=600)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    if proc.returncode != 0:
                        log.seek(0)
                        failures.append(f"`adplatform {' '.join(args)}` failed:\n{log.read()[-3000:]}")
                if failures:
                    raise RuntimeError(f"{self.name}: " + "\n".join(failures))

    async def check(self, summary: SimSummary) -> Result:
        config = self.config
        result = Result(self.name, faults=", ".join(self.faults), notes=list(self.notes))
        result.requests_per_s = summary.requests / summary.elapsed_s if summary.elapsed_s else 0.0
        result.error_share = summary.errors / summary.requests if summary.requests else 0.0
        result.fault_requests_per_s, result.fault_error_share = summary.window(*self.fault_window)
        if summary.retries:
            result.notes.append(f"{summary.retries} attempts retried on the other host")
        if summary.error_kinds:
            result.notes.append(f"errors: {summary.error_kinds}")
        events = {}
        for record in await read_to_end(config.kafka_bootstrap, config.topics.feedback):
            event = feedback_decoder.decode(record.value or b"")
            events[event.event_id] = event.expenditure_micros
        result.lost = sum(1 for eid in summary.acked_event_ids if eid not in events)
        conn = await asyncpg.connect(config.pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT campaign_id, budget * 1000000 AS budget, spent * 1000000 AS spent FROM online_ads.ads"
            )
            result.postgres_micros = int(
                await conn.fetchval("SELECT coalesce(sum(amount), 0) * 1000000 FROM online_ads.spend_events")
            )
        finally:
            await conn.close()
        budgets = {r["campaign_id"]: int(r["budget"]) for r in rows}
        result.overspend = sum(1 for r in rows if r["spent"] > r["budget"])
        client = open_redis(config.redis_url)
        store = BudgetStore(client, slot_s=config.slot_s)
        try:
            spent_all = await store.spent_all()
        finally:
            await store.aclose()
            await client.aclose()
        # This run's campaigns only: on a shared Redis Cluster other runs' keys are there too.
        redis_spent = {cid: s for cid, s in spent_all.items() if cid in budgets}
        result.redis_micros = sum(redis_spent.values())
        result.overspend += sum(1 for cid, s in redis_spent.items() if s > budgets[cid])
        if self.streaming_archive:
            books = archive_books(config.archive_dir)
            result.duplicated = books.duplicates
            result.archive_micros = books.spend_micros
            if books.events != len(events) or books.missing_files:
                result.notes.append(f"archive holds {books.events} of {len(events)} events")
        return result


# --- faults ---------------------------------------------------------------------------------------------


def _restart_service(service: str, hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        stack.stop_service(r.config, service)
        r.faults.append(f"{service} stopped {hold_s:.0f}s")
        await asyncio.sleep(hold_s)
        paths = stack.Paths(r.config.stack_dir)
        start = {"kafka": stack.start_kafka, "redis": stack.start_redis, "postgres": stack.start_postgres}[
            service
        ]
        await asyncio.to_thread(start, paths)
        await asyncio.to_thread(_wait_healthy, r.config)

    return fault


def _wait_healthy(config: Config) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(stack.health(config).values()):
            return
        time.sleep(0.5)
    raise RuntimeError("the stack did not come back")


async def _wipe_redis(r: Rig) -> None:
    client = aioredis.Redis.from_url(r.config.redis_url)
    try:
        await wipe_claimed(client)  # the scenario's own Redis database, never another
    finally:
        await client.aclose()
    r.faults.append("Redis FLUSHDB")


def _kill(process: str) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        managed = r.sup.procs[process]
        args = managed.proc.args
        assert isinstance(args, list)
        if process == "adserver":
            # One worker, not the supervisor: uvicorn replaces it and the new one bootstraps its index.
            os.kill(children(managed.proc.pid)[-1], signal.SIGKILL)
            r.faults.append("SIGKILL adserver worker")
            return
        r.sup.kill(process)
        r.faults.append(f"SIGKILL {process}")
        await asyncio.sleep(1)
        r.sup.start(process, *[str(a) for a in args[3:]])

    return fault


def _cut(proxy_name: str, hold_s: float, mode: str) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        proxy = r.proxies[proxy_name]
        getattr(proxy, mode)()
        r.faults.append(f"{mode} {proxy_name} {hold_s:.0f}s")
        await asyncio.sleep(hold_s)
        proxy.restore()

    return fault


#: The scenarios that stop a service of the shared stack (every other one faults only its own processes,
#: stores and proxies): ``make test`` runs them alone (``pytest -m exclusive``).
STACK_FAULTS = frozenset({"kafka-restart", "postgres-stop", "redis-restart"})


def scenarios(t: Timing) -> dict[str, Callable[[Rig], Awaitable[None]]]:
    return {
        "kafka-restart": _restart_service("kafka", t.hold_s),
        "postgres-stop": _restart_service("postgres", t.postgres_hold_s),
        "redis-restart": _restart_service("redis", t.hold_s),
        "redis-wipe": _wipe_redis,
        "kill-manager": _kill("manager"),
        "kill-adserver-worker": _kill("adserver"),
        "kill-served-writer": _kill("served-writer"),
        "kill-ledger": _kill("ledger"),
        "kill-pacer": _kill("pacer"),
        "kill-archive": _kill("archive"),
        "cut-adserver-redis": _cut("adserver-redis", t.hold_s, "cut"),
        "blackhole-manager-postgres": _cut("manager-postgres", t.hold_s, "blackhole"),
    }


async def run_scenario(name: str, timing: Timing, *, fast: bool) -> Result:
    base = load_config()
    fault = scenarios(timing)[name]
    rig = await Rig.open(base, name, timing, streaming_archive=(not fast) or name == "kill-archive")
    try:
        return await run_rig(rig, base, fault)
    finally:
        await rig.close()


async def run_rig(rig: Rig, base: Config, fault: Callable[[Rig], Awaitable[None]]) -> Result:
    name = rig.name
    await rig.prepare()
    target_pg = urlsplit(base.pg_dsn)
    target_redis = urlsplit(base.redis_url)
    if name == "cut-adserver-redis":
        rig.proxies["adserver-redis"] = FaultProxy(
            target_redis.hostname or "127.0.0.1", target_redis.port or 6379
        )
    if name == "blackhole-manager-postgres":
        rig.proxies["manager-postgres"] = FaultProxy(
            target_pg.hostname or "127.0.0.1", target_pg.port or 5432
        )
    with contextlib.ExitStack() as stack_:
        for proxy in rig.proxies.values():
            stack_.enter_context(proxy)
        try:
            rig.start()
            await rig.wait_ready()
            summary = await rig.load(fault)
            await asyncio.to_thread(rig.drain)
            return await rig.check(summary)
        finally:
            rig.sup.stop_all()


def format_table(results: list[Result]) -> str:
    """One line per scenario (the same columns on both topologies), its notes below it."""
    head = (
        f"{'scenario':<28} {'req/s':>7} {'errors':>7} {'fault req/s':>11} {'fault err':>9}  {'faults':<34} "
        f"{'lost':>5} {'dup':>5} {'over':>5}  conservation (redis = postgres = archive, micros)"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        archive = "n/a" if r.archive_micros is None else str(r.archive_micros)
        verdict = "OK" if r.conserved else "MISMATCH"
        load = (
            f"{r.scenario:<28} {r.requests_per_s:>7.0f} {r.error_share:>7.1%} "
            f"{r.fault_requests_per_s:>11.0f} {r.fault_error_share:>9.1%}  {r.faults[:34]:<34}"
        )
        books = f"{r.lost:>5} {r.duplicated:>5} {r.overspend:>5}"
        lines.append(f"{load} {books}  {r.redis_micros} = {r.postgres_micros} = {archive}: {verdict}")
        lines += [f"    note: {n}" for n in r.notes]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", nargs="*", help="Scenarios to run (default: all).")
    parser.add_argument("--fast", action="store_true", help="Short holds, archive built once at the end.")
    parser.add_argument(
        "--topology",
        choices=("single", "cluster"),
        default="single",
        help="The single-node stack, or the cluster stack (adplatform stack up --topology cluster).",
    )
    args = parser.parse_args()
    timing = FAST if args.fast else FULL
    run: Callable[[str, Timing], Coroutine[Any, Any, Result]]
    if args.topology == "cluster":
        from loadtest import chaos_cluster

        known = list(chaos_cluster.scenarios(timing))
        run = chaos_cluster.run_scenario
    else:
        known = list(scenarios(timing))
        run = functools.partial(run_scenario, fast=args.fast)
    names = args.scenario or known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {args.topology} scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    results: list[Result] = []
    for name in names:
        print(f"==> {name}", flush=True)
        results.append(asyncio.run(run(name, timing)))
        print("\n".join(format_table(results[-1:]).splitlines()[2:]), flush=True)  # its row and notes
    print()
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(script_main(main))
