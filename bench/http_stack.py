"""The HTTP benchmark's set-up: servers in subprocesses on free ports, and corpora seeded through the
production path (producer → Ad Manager → ad-changes) under a bench-only topic prefix."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from adplatform import names
from adplatform.config import Config
from adplatform.kafka import ensure_topics, wait_for_topics
from devstack.kafka import YOUNG_BROKER_S, young_broker_age_s
from devstack.paths import Paths
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.instruction import NEW
from ingest.manager import run_manager
from ingest.producer import produce_file
from loadtest.workers import wait_workers_ready

RESULTS = Path(__file__).resolve().parent / "results"

SEED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "campaigns_seed.csv"


#: Seconds of load, not measured, before the feedback bench's first round behind a young broker of the
#: stack's (``devstack.kafka.YOUNG_BROKER_S``): under that load the broker's CPU per request fell from 3-5x
#: a warm broker's to a warm broker's after ~25 s (BENCHMARKS.md, 2026-12-07). Serve's batched served
#: ads cost a broker about a tenth of that per request: the serve bench measured no difference, and skips
#: it.
BROKER_WARM_UP_S = 30


def broker_warm_up_s(config: Config, asked: int | None) -> int:
    """How long to load the first ad server before it is measured: ``asked`` when given (0: not at all),
    else ``BROKER_WARM_UP_S`` behind a young broker of the stack's, else 0. A warm-up is announced, with
    the broker's age when that is why."""
    age = young_broker_age_s(Paths(config.stack_dir))
    seconds = max(0, asked) if asked is not None else (0 if age is None else BROKER_WARM_UP_S)
    if seconds:
        why = (
            "" if asked is not None or age is None else f"the stack's Kafka broker started {age:.0f} s ago; "
        )
        print(
            f"warming up: {why}{seconds} s of load on the first ad server first, not measured "
            "(--broker-warm-up 0: none)",
            flush=True,
        )
    return seconds


def add_broker_warm_up(parser: argparse.ArgumentParser) -> None:
    """``--broker-warm-up SECONDS`` on an HTTP bench's command line (``broker_warm_up_s``)."""
    parser.add_argument(
        "--broker-warm-up", type=int, default=None, metavar="SECONDS",
        help=f"load the first ad server this long first, not measured (default: {BROKER_WARM_UP_S} when "
        f"the stack's Kafka broker started less than {YOUNG_BROKER_S:.0f} s ago, else 0)",
    )  # fmt: skip


def write_corpus(
    path: Path, campaigns: int | None, *, capped_share: float = 0.0, pacing_mode: str = "asap"
) -> tuple[Path, bool]:
    """The file to ingest: the seed file (dates rebased) when ``campaigns`` is None and it exists, else
    ``campaigns`` generated New instructions (4,242 like the seed when None), a ``capped_share`` of them
    with a frequency cap (the same campaigns whatever the share), all in ``pacing_mode`` (``asap`` by
    default: the serving measured before pacing modes existed). Returns (file, rebase)."""
    if campaigns is None and SEED_CSV.is_file():
        return SEED_CSV, True
    wanted = campaigns or 4_242
    rows = [
        r
        for r in generate_campaigns(int(wanted * 1.9) + 100, 11, datetime.now(UTC), capped_share=capped_share)
        if r["action"] == NEW
    ]
    write_campaigns_csv(path, [{**row, "pacing_mode": pacing_mode} for row in rows[:wanted]])
    return path, False


async def seed(config: Config, file: Path, *, rebase: bool) -> str:
    """Fresh topics for ``config``'s prefix, the file produced and folded by the manager; a summary."""
    await ensure_topics(config)
    await wait_for_topics(config, config.topics.all())
    produced = await produce_file(config, file, rebase=rebase)
    stats = await run_manager(config, until_idle=True, idle_timeout_s=600)
    return f"{produced.published} instructions → {stats.applied} campaign states ({stats.rejected} rejected)"


async def delete_campaign_keys(config: Config, campaign_ids: list[str]) -> int:
    """Every Redis key of these (bench-only) campaigns: budgets and de-duplication keys, which would
    otherwise stay for the token's life (a feedback bench run leaves some 100,000) and make each AOF
    rewrite of the stack's Redis longer. Returns how many were deleted."""
    wanted = set(campaign_ids)
    client = aioredis.from_url(config.redis_url)
    deleted = 0
    try:
        # One pass over the keyspace for all the campaigns; a key's hash tag names its campaign.
        keys = [
            k
            async for k in client.scan_iter(match=f"{names.REDIS_PREFIX}*{{?*}}*", count=5000)
            if names.campaign_id_of(k.decode()) in wanted
        ]
        for start in range(0, len(keys), 1000):
            deleted += int(await client.unlink(*keys[start : start + 1000]))
        if campaign_ids:
            await client.srem(names.BLOCKED_SET, *campaign_ids)
    finally:
        await client.aclose()
    return deleted


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s}s")
        time.sleep(0.2)


@contextlib.contextmanager
def server_process(
    app: str,
    server: str,
    port: int,
    *,
    workers: int,
    env: dict[str, str] | None = None,
    ready_path: str,
    cwd: Path | None = None,
    options: str = "",
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m bench.http run-server`` in its own process group; SIGTERM (then SIGKILL) on exit.
    ``cwd``: another checkout of the project to run the server from (``-m`` puts it first on the path);
    ``options``: granian settings as JSON (``adserver.http.server.granian_settings``), granian only."""
    cmd = [sys.executable, "-m", "bench.http", "run-server", app, server, str(port), str(workers)]
    cmd += [options] if options else []
    log = open(f"/tmp/bench-http-{port}.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=log, start_new_session=True, cwd=cwd
    )
    try:
        if ready_path == "/readyz":  # the ad server: one 200 is one worker; measure once each one is ready
            asyncio.run(wait_workers_ready(f"http://127.0.0.1:{port}", workers, timeout_s=300))
        else:
            wait_http(f"http://127.0.0.1:{port}{ready_path}", timeout_s=300)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def save_results(
    stem: str, settings: Mapping[str, object], rows: list[dict[str, object]], *, label: str = ""
) -> Path:
    """``bench/results/<stem>-<local time>[-label].json``: the rows, the machine and the run's settings."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{f'-{label}' if label else ''}.json"
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(), "settings": dict(settings)}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"saved {out}")
    return out
