"""``make demo``: the whole pipeline end to end on the local stack, then a summary.

Generates campaigns and users, produces the campaigns, runs the platform's processes in the background
under ``adplatform run`` (manager, served-writer, ledger, pacer, reconciler, the ad server with 2 workers,
the archive job; one log, ``.stack/logs/demo/run.log``), simulates users (first for ``WARM_UP_S``, not
measured, when the stack's Kafka broker has just started: ``warm_up_s``), stops them in order (the streaming
job gracefully, last), drains every consumer, compacts the archive, loads the warehouse (its own, under the
demo's directory, its metastore in the demo's database), builds the report and prints the summary with the
conservation line: spend by the ledger = spend in Redis = spend in the archive = spend in the warehouse
(``feedback`` and ``campaign_day``, checked against the ledger per campaign and day by the load).

The demo never touches the user's data: it works in a database of its own, ``<database>_demo`` (e.g.
``adplatform_demo``), a Redis logical database it claims, topics under its own prefix and a directory of
its own per run, ``.stack/demo/demo<time>`` (its campaign file, archive, warehouse and report). The topics
go when the demo ends; the database, the Redis database and the run's directory stay, for a look, until
``make demo-down`` (``--down``), which stops whatever a demo left running (by PID), drops them and removes
the directory. A second demo replaces them (an earlier run's directory is removed: its warehouse's
metastore was in the database it replaces).

``--live`` (``make demo-live``) keeps the platform and the admin service running with the dashboard at
``http://127.0.0.1:8100/dashboard/`` and simulates users in bounded rounds (loopback only) until Ctrl-C; it
creates a read key for the dashboard and prints it. Ctrl-C stops everything in order; the stores stay until
``make demo-down``, as after a demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, NamedTuple

import asyncpg
import httpx
import redis.asyncio as aioredis
import uvloop
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from admin.scrape import (
    FEEDBACK_ROUTE,
    SERVE_ROUTE,
    Snapshot,
    feedback_stage_quantiles,
    feedback_stages,
    format_feedback_stages,
    latency_quantile,
    read_once,
)
from adplatform.cli.common import script_main
from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, start_or_close, wait_for_topics
from adplatform.pidfile import write_pid_file
from adplatform.ports import listener
from adplatform.process import interrupt_on_signals
from adplatform.redis_latency import stalls_since
from adplatform.sandbox import Sandbox, close_named, named_owner, open_sandbox
from adplatform.services import ADMIN_PORT, ADSERVER_PORT
from archive.layout import ArchiveLayout
from budget.budget_redis import BudgetStore
from devstack.kafka import YOUNG_BROKER_S, young_broker_age_s
from devstack.paths import Paths
from index.money import format_micros
from loadtest.books import archive_books
from loadtest.cpu import CpuMeter, format_table, platform_label
from loadtest.simulator import SimSummary, Simulator, format_summary, load_users
from loadtest.supervisor import Supervisor
from loadtest.workers import wait_workers_ready

WORKERS = 2
#: A demo run's topic: ``demo<time>-`` (``run``'s tag) and a platform topic's name.
DEMO_TOPIC = re.compile(r"demo\d+-(.+)")
LIVE_COMMAND = "make demo-live   (or: .venv/bin/python -m loadtest.demo --live)"
#: ``--live`` simulates in rounds of this many seconds (each bounded by --rate), until Ctrl-C.
LIVE_ROUND_S = 30.0
#: What ``adplatform run`` runs for the demo: named, so a service added to the platform later (the admin API)
#: does not start here unasked.
SERVICES = ("manager", "served-writer", "ledger", "pacer", "reconciler", "adserver", "archive")
#: ``adplatform run`` stops its services one after another: each within 30 s, the archive within 120 s.
STOP_TIMEOUT_S = 6 * 30 + 120 + 30
#: The demo's database is ``<the configured database>_demo``.
SUFFIX = "demo"


@dataclass(frozen=True)
class Ports:
    """Where the demo's ad server (and, live, its admin service) listen on loopback."""

    adserver: int = ADSERVER_PORT  # --port
    admin: int = ADMIN_PORT  # --admin-port

    @property
    def adserver_url(self) -> str:
        return f"http://127.0.0.1:{self.adserver}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}/dashboard/"

    def ensure_free(self, *, live: bool) -> None:
        """Before anything is made: a port another process holds ends the demo with one line (its
        services would fail to bind and the demo wait for them)."""
        wanted = [("ad server", self.adserver, "--port")]
        if live:
            wanted.append(("admin service", self.admin, "--admin-port"))
        for what, port, option in wanted:
            holder = listener(port)
            if holder is not None:
                raise SystemExit(
                    f"the demo's {what} needs 127.0.0.1:{port}, in use by {holder}; stop it, or give the "
                    f"demo another port: .venv/bin/python -m loadtest.demo {option} N"
                )


#: Behind a young broker (``devstack.kafka.YOUNG_BROKER_S``: the first demo after a broker start missed the
#: demo's latency targets) the users are simulated this long first, not measured, so the measured minute
#: meets a warm broker.
WARM_UP_S = 45.0


#: The demo's batch jobs (export, warehouse load, report) read a few thousand events: their JVMs spend
#: their seconds in the JIT's warm-up, where C1 alone finishes sooner (0.79-0.86x the wall time each,
#: BENCHMARKS.md "Warehouse load", 2026-12-07). A real load keeps the JVM's defaults: its hot loops want C2.
BATCH_JAVA_OPTIONS: Final = "-XX:TieredStopAtLevel=1"


def batch_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the demo's Spark batch jobs: ``BATCH_JAVA_OPTIONS`` first in ``SPARK_SUBMIT_OPTS`` (the
    options every ``spark-submit`` JVM starts with), so that the user's own options there, later, win."""
    own = env.get("SPARK_SUBMIT_OPTS", "").strip()
    return {**env, "SPARK_SUBMIT_OPTS": f"{BATCH_JAVA_OPTIONS} {own}".strip()}


def warm_up_s(young_broker_age: float | None, asked: float | None) -> float:
    """How long to simulate before the measured run: ``asked`` when given, else ``WARM_UP_S`` behind a
    young broker of the stack's (``young_broker_age_s``) and nothing behind a warm one."""
    if asked is not None:
        return max(0.0, asked)
    return WARM_UP_S if young_broker_age is not None else 0.0


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """Run an ``adplatform`` subcommand to completion; fail loudly with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise SystemExit(f"`adplatform {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def start_platform(
    stack_dir: Path, env: dict[str, str], ports: Ports, services: tuple[str, ...] = SERVICES
) -> subprocess.Popen[bytes]:
    """``adplatform run`` with the demo's services in the background, its log under ``logs/demo`` and its
    PID under ``run/demo`` (what ``make demo-down`` stops if the demo could not)."""
    run_dir, log_dir = stack_dir / "run" / "demo", stack_dir / "logs" / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "run.log").open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adplatform.cli",
                "run",
                *services,
                "--workers",
                str(WORKERS),
                "--port",
                str(ports.adserver),
                *(("--admin-port", str(ports.admin)) if "admin" in services else ()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C reaches the demo, which stops it in order
        )
    write_pid_file(run_dir / "run.pid", proc.pid)  # checked against /proc by make demo-down
    return proc


def stop_platform(stack_dir: Path, proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM ``adplatform run`` (it stops the ad server first, the archive last) and wait for it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    (stack_dir / "run" / "demo" / "run.pid").unlink(missing_ok=True)
    return proc.returncode


def wait_started(marker: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the archive job did not start within {timeout_s:.0f}s; see .stack/logs/demo/")
        time.sleep(0.5)
    time.sleep(2)


def wait_first_batches(layout: ArchiveLayout, timeout_s: float = 60) -> None:
    """Until each streaming query has committed its first micro-batch (it runs on the empty topics too):
    that batch plans and compiles everything (3-4 s of both cores here), so the simulation starts after it,
    in the steady state its figures are about. After ``timeout_s`` the demo goes on anyway."""
    checkpoints = (layout.feedback_checkpoint, layout.corrupt_checkpoint, layout.request_counts_checkpoint)
    deadline = time.monotonic() + timeout_s
    while not all((c / "commits" / "0").exists() for c in checkpoints) and time.monotonic() < deadline:
        time.sleep(0.5)


def load_warehouse(books_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """``adplatform warehouse load --check``: the demo's archive into its warehouse, then the books per
    campaign and day against the ledger in the same job; returns them (``BooksCheck.as_json``). A job that
    ran but found differences (exit 1) is not a failure of the demo: its conservation line says MISMATCH."""
    books_path.unlink(missing_ok=True)
    args = ("warehouse", "load", "--check", "--books-json", str(books_path))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if result.returncode not in (0, 1) or not books_path.exists():
        raise SystemExit(f"`adplatform {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
    # spark-submit passes the job's log lines on stdout too: only its summary and the books' lines.
    for line in result.stdout.splitlines():
        if line.startswith(("warehouse load ", "books ")):
            print("    " + line)
    print(f"    (warehouse load and books: {time.monotonic() - started:.0f}s)")
    books: dict[str, Any] = json.loads(books_path.read_text())
    return books


async def books(config: Config) -> dict[str, int]:
    """Spend in PostgreSQL (ledger) and Redis, and the live campaigns."""
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        ledger = await conn.fetchval("SELECT coalesce(sum(amount), 0) * 1000000 FROM online_ads.spend_events")
        live = await conn.fetchval(
            "SELECT count(*) FROM online_ads.ads"
            " WHERE status = 'Active' AND now() >= flight_start AND now() < flight_end"
        )
        served_rows = await conn.fetchval("SELECT count(*) FROM online_ads.served_ads")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        redis_spent = sum((await BudgetStore(client, slot_s=config.slot_s).spent_all()).values())
    finally:
        await client.aclose()
    return {"ledger": int(ledger), "redis": redis_spent, "live": int(live), "served_rows": int(served_rows)}


async def open_demo_stores(base: Config) -> Sandbox:
    """The demo's set-up: its own database and Redis database beside ``base``'s (a previous demo's are
    replaced, emptied); nothing of ``base``'s is read or written."""
    return await open_sandbox(base, SUFFIX, owner=named_owner(base, SUFFIX))


async def close_demo_stores(base: Config) -> tuple[bool, int | None]:
    """The demo's tear-down (``make demo-down``): its database dropped, its Redis database released."""
    return await close_named(base, SUFFIX)


def remove_runs(stack_dir: Path, *, keep: Path | None = None) -> tuple[int, int]:
    """Remove the demo's run directories (``.stack/demo/demo<time>``) but ``keep``; (how many, bytes).
    Only the demo writes under ``.stack/demo``, and only directories named as its runs are removed."""
    removed = size = 0
    runs = stack_dir / "demo"
    for run_dir in sorted(runs.glob("demo*")) if runs.is_dir() else ():
        named = run_dir.name.removeprefix("demo").isdigit()  # demo<time>, as ``run`` names them
        if not named or not run_dir.is_dir() or run_dir.is_symlink() or run_dir == keep:
            continue
        size += sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(run_dir, ignore_errors=True)
        removed += 1
    return removed, size


def left_demo_topics(existing: Iterable[str], platform_topics: Iterable[str]) -> list[str]:
    """The topics among ``existing`` that a demo run created (``run`` names them ``demo<time>-`` before a
    platform topic's name) and did not delete: it was killed, or Kafka was down when it ended."""
    names = set(platform_topics)
    found = (DEMO_TOPIC.fullmatch(t) for t in existing)
    return sorted(m.group(0) for m in found if m is not None and m.group(1) in names)


async def delete_left_topics(base: Config) -> list[str]:
    """``make demo-down``: delete ``left_demo_topics`` on ``base``'s broker; returns them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka_bootstrap, request_timeout_ms=30_000)
    await start_or_close(admin)
    try:
        existing = await admin.list_topics()
    finally:
        await admin.close()
    left = left_demo_topics(existing, replace(base.topics, prefix="").all())
    return await delete_topics(base, left) if left else []


def run(
    duration_s: float,
    campaigns: int,
    users: int,
    rate: float,
    *,
    live: bool = False,
    ports: Ports = Ports(),
    warm_up: float | None = None,
) -> int:
    ports.ensure_free(live=live)
    base = load_config()
    stores = asyncio.run(open_demo_stores(base))
    step(f"the demo's own stores: database {stores.database}, Redis database {stores.redis_db}")
    # A fresh topic and group prefix per demo run: the demo's numbers are its own, whatever ran before.
    tag = f"demo{int(time.time())}-"
    config = stores.config.namespaced(tag, archive_dir=base.stack_dir / "demo" / tag.rstrip("-") / "archive")
    removed, _ = remove_runs(base.stack_dir, keep=config.archive_dir.parent)  # an earlier run's: replaced
    if removed:
        step(f"removed {removed} earlier demo run director{'y' if removed == 1 else 'ies'} under .stack/demo")
    env = {
        **stores.env,
        "ADP_TOPIC_PREFIX": tag,
        "ADP_GROUP_PREFIX": tag,
        "ADP_ARCHIVE_DIR": str(config.archive_dir),
        "ADP_WAREHOUSE_DIR": str(config.archive_dir.parent / "warehouse"),
    }
    config.archive_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(ensure_topics(config))
        asyncio.run(wait_for_topics(config, config.topics.all()))
        if live:
            return _live(config, env, stores, campaigns, users, rate, ports)
        return _run(config, env, stores, duration_s, campaigns, users, rate, ports, warm_up)
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):  # Kafka down: the topics stay
            asyncio.run(delete_topics(config))


def _run(
    config: Config,
    env: dict[str, str],
    stores: Sandbox,
    duration_s: float,
    campaigns: int,
    users: int,
    rate: float,
    ports: Ports,
    warm_up: float | None = None,
) -> int:
    full_env = dict(os.environ, **env)
    work = config.archive_dir.parent
    step(f"generating {campaigns} campaign instructions and {users} users")
    csv_path = work / "campaigns.csv"
    cli("generate", "campaigns", "--count", str(campaigns), "--seed", "1", "-o", str(csv_path), env=full_env)
    cli("generate", "users", "--count", str(users), "--seed", "1", env=full_env)
    step("producing campaigns to Kafka")
    print("    " + cli("produce", str(csv_path), env=full_env))
    step("starting manager, served-writer, ledger, pacer, ad server (2 workers), archive job")
    platform = start_platform(config.stack_dir, full_env, ports)
    try:
        try:
            asyncio.run(wait_workers_ready(ports.adserver_url, WORKERS))
        except TimeoutError as exc:
            raise SystemExit(f"{exc}; see .stack/logs/demo/") from exc
        # Spark takes a while (and both cores) to start: simulate once its streaming query runs.
        wait_started(ArchiveLayout(config.archive_dir).feedback_checkpoint / "metadata")
        wait_first_batches(ArchiveLayout(config.archive_dir))
        age = young_broker_age_s(Paths(config.stack_dir))
        warm_s = warm_up_s(age, warm_up)
        warm_served = 0
        if warm_s > 0:
            young = f"the stack's Kafka broker started {age:.0f}s ago; " if age is not None else ""
            step(f"warming up: {young}simulating users for {warm_s:.0f}s, not measured")
            warm_served = uvloop.run(_simulate(config, ports, warm_s, rate, quiet=True, seed=2)).served
        step(f"simulating users for {duration_s:.0f}s at {rate:.0f} requests/s")
        meter = platform_meter(config, platform.pid)
        meter.sample(time.monotonic())
        metrics_before = server_metrics(ports)
        measured_since = time.time()
        # uvloop: the simulator shares the platform's cores, so its own CPU per request counts.
        summary = uvloop.run(_simulate(config, ports, duration_s, rate, meter=meter))
        meter.sample(time.monotonic())
        server = server_side(ports, metrics_before)
        stalls = asyncio.run(stalls_since(config.redis_url, measured_since))
        step("stopping the ad server, then draining the ledger, the served-writer and the archive")
        # adplatform run stops the ad server first and the archive last (its micro-batch completes).
        if stop_platform(config.stack_dir, platform) != 0:
            print("    adplatform run did not stop cleanly; see .stack/logs/demo/run.log", flush=True)
        print("    " + cli("ledger", "--until-idle", "--timeout", "120", env=full_env))
        print("    " + cli("served-writer", "--until-idle", "--timeout", "120", env=full_env))
        print("    " + cli("archive", "run", "--until-idle", env=full_env).splitlines()[-1])
        print("    " + cli("reconcile", env=full_env))
        step("compacting the archive, exporting the tables, loading the warehouse, building the report")
        print("    " + cli("archive", "compact", "--all", env=full_env).splitlines()[-1])
        jobs_env = batch_env(full_env)
        print("    " + cli("archive", "export", env=jobs_env).splitlines()[-1])
        warehouse = load_warehouse(work / "warehouse-books.json", jobs_env)
        report = cli("report", env=jobs_env).splitlines()[-1]
    finally:
        stop_platform(config.stack_dir, platform)
    b = asyncio.run(books(config))
    archive = archive_books(config.archive_dir)
    archived_events, archived = archive.events, archive.spend_micros
    stored = warehouse["campaign_day_micros"]
    ok = b["ledger"] == b["redis"] == archived == stored and warehouse["balanced"]
    print()
    print("=" * 72)
    print(f"campaigns live  {b['live']:>10}")
    print(format_summary(summary, spend=format_micros(b["redis"])))
    if server.stages:
        print(f"feedback stages {format_feedback_stages(server.stages, server.stage_tails)}")
    if (latency := server.latency_line()) is not None:
        print(latency)
    if stalls is not None:  # the disk's share of feedback's tail (an fsync holds every client)
        print(f"redis           {stalls.line()}")
    seen = summary.served + warm_served
    warm = f", {warm_served} of them while warming up" if warm_served else ""
    print(f"served_ads rows {b['served_rows']:>10}   (200 responses seen: {seen}{warm})")
    print(f"archived events {archived_events:>10}")
    verdict = "OK" if ok else "MISMATCH"
    print(
        f"conservation    ledger {format_micros(b['ledger'])} = redis {format_micros(b['redis'])}"
        f" = archive {format_micros(archived)} = warehouse {format_micros(stored)}: {verdict}"
    )
    if not warehouse["balanced"]:
        print(
            f"warehouse       feedback {format_micros(warehouse['feedback_micros'])}, "
            f"{len(warehouse['differences'])} campaign-days differ from the ledger"
        )
    print(f"report          {report}")
    print(format_table(meter.table()))
    print(f"kept            database {stores.database}, Redis database {stores.redis_db} (make demo-down)")
    print(f"see it live     {LIVE_COMMAND}: the dashboard at {ports.dashboard_url}")
    print("=" * 72)
    return 0 if ok and summary.served > 0 else 1


def _live(
    config: Config,
    env: dict[str, str],
    stores: Sandbox,
    campaigns: int,
    users: int,
    rate: float,
    ports: Ports,
) -> int:
    """The platform with the admin service, and users simulated round after round until Ctrl-C."""
    full_env = dict(os.environ, **env)
    work = config.archive_dir.parent
    step(f"generating {campaigns} campaign instructions and {users} users")
    csv_path = work / "campaigns.csv"
    cli("generate", "campaigns", "--count", str(campaigns), "--seed", "1", "-o", str(csv_path), env=full_env)
    cli("generate", "users", "--count", str(users), "--seed", "1", env=full_env)
    print("    " + cli("produce", str(csv_path), env=full_env))
    key = cli("apikey", "create", "--name", f"demo-viewer-{int(time.time())}", "--role", "read", env=full_env)
    step("starting the platform and the admin service (adplatform run; log .stack/logs/demo/run.log)")
    platform = start_platform(config.stack_dir, full_env, ports, (*SERVICES, "admin"))
    try:
        try:
            asyncio.run(wait_workers_ready(ports.adserver_url, WORKERS))
        except TimeoutError as exc:
            raise SystemExit(f"{exc}; see .stack/logs/demo/") from exc
        print()
        print("=" * 72)
        print(f"dashboard       {ports.dashboard_url}")
        print(f"read key        {key}")
        where = f"127.0.0.1:{ports.adserver}"
        print(f"traffic         {rate:.0f} requests/s to {where}, in {LIVE_ROUND_S:.0f}s rounds")
        print("stop            Ctrl-C (the stores stay until make demo-down)")
        print("=" * 72, flush=True)
        rounds = 0
        try:
            while True:
                rounds += 1
                summary = asyncio.run(_simulate(config, ports, LIVE_ROUND_S, rate, quiet=True, seed=rounds))
                print(
                    f"    round {rounds}: requests {summary.requests}  served {summary.served}"
                    f"  errors {summary.errors}",
                    flush=True,
                )
        except KeyboardInterrupt:
            print()
            step("Ctrl-C (or SIGTERM): stopping the ad server, the admin service, then the consumers")
    finally:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during the stop: finish it anyway
            stop_platform(config.stack_dir, platform)
    print(f"kept            database {stores.database}, Redis database {stores.redis_db} (make demo-down)")
    return 0


def server_metrics(ports: Ports) -> Snapshot | None:
    """The ad server's ``/metrics`` (every worker's), None if it does not answer."""
    try:
        return read_once(f"{ports.adserver_url}/metrics")
    except httpx.HTTPError:
        return None


class ServerSide(NamedTuple):
    """The ad server's own view of the measured minute (its ``/metrics`` since the minute began)."""

    #: Each feedback stage's mean and p99 in milliseconds per batch.
    stages: dict[str, float]
    stage_tails: dict[str, float]
    #: p99 in milliseconds of serve and of feedback, from a request's first byte read by a worker to its
    #: answer (buckets 5, 10, 25, 50 ms...: an estimate within its bucket); None without a request.
    serve_p99_ms: float | None
    feedback_p99_ms: float | None

    def latency_line(self) -> str | None:
        """``server side     serve p99 3.1 ms, feedback p99 17.4 ms (...)``: beside the simulator's p99s it
        tells the server's share of a tail from the time before a worker read the request and after it
        answered (a busy loop, the client's own, the machine's scheduling)."""
        if self.serve_p99_ms is None or self.feedback_p99_ms is None:
            return None
        return (
            f"server side     serve p99 {self.serve_p99_ms:.1f} ms"
            f"  feedback p99 {self.feedback_p99_ms:.1f} ms"
            "  (the ad server's histograms: from its worker's read of a request to its answer)"
        )


def server_side(ports: Ports, since: Snapshot | None) -> ServerSide:
    """The ad server's view since ``since`` (the measured minute, not the warm-up); empty if it does not
    answer."""
    now = server_metrics(ports)
    if now is None:
        return ServerSide({}, {}, None, None)
    serve, feedback = (latency_quantile(now, since, 0.99, route=r) for r in (SERVE_ROUTE, FEEDBACK_ROUTE))
    return ServerSide(
        feedback_stages(now, since),
        feedback_stage_quantiles(now, since, 0.99),
        None if serve is None else serve * 1000,
        None if feedback is None else feedback * 1000,
    )


def platform_meter(config: Config, platform_pid: int) -> CpuMeter:
    """A CPU meter over ``adplatform run`` and what it started, the stack's servers and this process
    (the simulator): the demo's table of where the machine went."""
    from devstack.paths import Paths
    from devstack.pids import read_pid

    roots = {"adplatform run": platform_pid, "demo (simulator)": os.getpid()}
    paths = Paths(config.stack_dir)
    for name in ("kafka", "redis", "postgres"):
        pid = read_pid(paths, name)
        if pid is not None:
            roots[f"stack {name}"] = pid
    return CpuMeter(roots, namer=platform_label)


async def _simulate(
    config: Config,
    ports: Ports,
    duration_s: float,
    rate: float,
    *,
    quiet: bool = False,
    seed: int = 1,
    meter: CpuMeter | None = None,
) -> SimSummary:
    users = await load_users(config.pg_dsn)
    sim = Simulator(users, ad_url=ports.adserver_url, rate=rate, concurrency=32, seed=seed)

    def tick(s: SimSummary, elapsed: float) -> None:
        if meter is not None and int(elapsed) % 5 == 0:
            meter.sample(time.monotonic(), full=False)  # a process that ends mid-run keeps its CPU
        if not quiet and int(elapsed) % 5 == 0:
            print(
                f"    [{elapsed:4.0f}s] requests {s.requests}  served {s.served}  errors {s.errors}",
                flush=True,
            )

    return await sim.run(duration_s, on_tick=tick)


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--campaigns", type=int, default=3000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument(
        "--warm-up", type=float, default=None, metavar="SECONDS",
        help=f"simulate this long first, not measured (default: {WARM_UP_S:.0f} when the stack's Kafka "
        f"broker started less than {YOUNG_BROKER_S:.0f} s ago, else 0)",
    )  # fmt: skip
    parser.add_argument("--port", type=_port, default=ADSERVER_PORT, help="The ad server's port.")
    parser.add_argument(
        "--admin-port", type=_port, default=ADMIN_PORT, help="The admin service's port (--live)."
    )
    parser.add_argument("--down", action="store_true", help="Stop what a demo left running, by PID.")
    parser.add_argument(
        "--live", action="store_true",
        help="Keep the platform and the dashboard running with simulated users until Ctrl-C.",
    )  # fmt: skip
    args = parser.parse_args()
    if args.down:
        base = load_config()
        stopped = Supervisor.stop_recorded(base.stack_dir / "run" / "demo", timeout_s=STOP_TIMEOUT_S)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        dropped, redis_db = asyncio.run(close_demo_stores(base))
        print(f"dropped: {'the demo database' if dropped else 'no demo database'}, ", end="")
        print("no demo Redis database" if redis_db is None else f"Redis database {redis_db} released")
        removed, size = remove_runs(base.stack_dir)
        print(f"removed: {removed} demo run director{'y' if removed == 1 else 'ies'} ({size / 1e6:.1f} MB)")
        try:
            left = asyncio.run(delete_left_topics(base))
            print(f"deleted: {len(left)} topic{'' if len(left) == 1 else 's'} of demo runs that ended early")
        except (KafkaError, OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            print(f"deleted: no topics (Kafka at {base.kafka_bootstrap} did not answer: {why})")
        return 0
    ports = Ports(args.port, args.admin_port)
    warm_up: float | None = args.warm_up
    live: bool = args.live
    # SIGTERM (kill, a closing session) ends the demo as Ctrl-C does: the platform stopped, the topics gone.
    with interrupt_on_signals():
        return run(
            args.duration, args.campaigns, args.users, args.rate, live=live, ports=ports, warm_up=warm_up
        )


if __name__ == "__main__":
    sys.exit(script_main(main))
