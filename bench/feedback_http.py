"""Feedback throughput: ``POST /ad/{request_id}/feedback`` with the real Redis and Kafka, beside the
minimal Starlette app, in one run with ``wrk`` (2 workers, 64 connections by default).

``python -m bench.feedback_http``: one campaign (``--campaigns N``: N) with a budget no run can spend is
seeded producer → manager under a bench-only topic prefix; every request carries its own signed request
id (issued with the server's key, exactly as the serve route does), so each one is a real debit plus an
acknowledged ``ad-feedback`` event, never a duplicate. wrk threads walk disjoint halves of the token
list. Prints req/s, p50/p99 and the ratio to the minimal app; saves JSON under ``bench/results/``.

Two references, from the same minimal app in each round: its GET of the serve URL (the issue's reference,
``ratio``) and its POST of the feedback URL driven by the same wrk script as the feedback server, body and
request ids included (``vs POST``): the like-for-like one, where wrk's own cost per request is the same.

``--durable`` adds a third reference to every round: ``bench.minimal_durable``, the minimal app's POST
with the two durable writes a feedback must make, written the plain way (a Redis script call per batch
under ``appendfsync always``, an ``acks=all`` event per request through the house producer, the same group
commit) and nothing else: what those writes cost a plain Starlette app on this machine, in the same run.

``--rounds N`` measures the minimal app and the feedback server N times, alternating, and adds the median
of each column: on a shared machine one run can be 20% off either way (the minimal app alone has measured
24,000 to 34,000 req/s in one hour), so a figure worth quoting is a median of rounds.

Each feedback row also says where the machine's CPU went while wrk ran (``bench.cpu_share``: the server
and its workers, Redis, Kafka, wrk, the whole machine), so a run short of CPU is told from one that waits
on its round trips.

And where a batch's time went, from the server's ``/metrics`` after the run (the sum over its workers):
the mean milliseconds per batch at the debit gate, in the debit call (Redis) and in the publish (Kafka),
each stage's p99 (read from the stage histograms' buckets: which stage holds the tail, not to the
millisecond) and the mean requests per batch (``adserver_feedback_stage_seconds``,
``adserver_feedback_batch_requests``; absent for a baseline tree older than them). Then the disk's share
of that tail: in how many seconds of the run Redis itself stalled for 5 ms or more, and its worst
(``aof-fsync-always``: every client waited for one fsync of the AOF; ``adplatform.redis_latency``), read
from Redis's latency monitor, which the stack's Redis runs with (absent when it does not); the ``--durable``
reference's rows say the same of theirs (the same writes meet the same disk).

Behind a young broker of the stack's (started less than ``devstack.kafka.YOUNG_BROKER_S`` ago, e.g. right
after ``make stack-up``) the feedback server is loaded for ``BROKER_WARM_UP_S`` first, not measured: such a
broker spends 3-5x a warm one's CPU per request while its JIT compiles, and the first rounds measured it
(``--broker-warm-up SECONDS`` sets the length; 0: none).

``--baseline-tree DIR`` also runs the feedback server from another checkout (``git archive <commit> |
tar -x -C DIR``) in every round, right before this tree's, with fresh request ids of its own, and prints
each round's ratio to it: a before/after comparison against the same minimal-app reference.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from admin.scrape import feedback_stage_quantiles, feedback_stages, format_feedback_stages, read_once
from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.kafka import delete_topics
from adplatform.ports import free_port
from adplatform.redis_latency import stalls_since
from adplatform.sandbox import sandbox_environment
from adserver.token import RequestToken, TokenSigner
from bench.cpu_share import measure_cpu
from bench.http_stack import (
    add_broker_warm_up,
    broker_warm_up_s,
    delete_campaign_keys,
    save_results,
    seed,
    server_process,
)
from bench.wrk import _DONE, WrkResult, add_client_policy, make_paths, run_wrk_as, write_script
from ingest.csvfile import format_flight
from ingest.generator import write_campaigns_csv
from ingest.instruction import COLUMNS

BODY = '{"view": 1, "click": 1, "acquisition": 0}'
BASELINE = " (baseline)"
MINIMAL_POST = "minimal starlette (POST, same script)"
DURABLE = "minimal POST + Redis + Kafka"


def campaign_file(path: Path, campaign_ids: list[str]) -> Path:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    date_range, time_range = format_flight(start, start + timedelta(days=2))
    row = {
        "text": "bench", "category": "Bench", "keywords": "bench", "campaign_id": "",
        "action": "New Campaign", "target_gender": "All", "target_age_range": "{'start': '0', 'end': '0'}",
        "target_city": "All", "target_state": "All", "target_country": "India", "target_income_bucket": "All",
        "target_device": "All", "cpc": "0.0001", "cpa": "0.002", "budget": "100000000",
        "date_range": date_range, "time_range": time_range,
    }  # fmt: skip
    write_campaigns_csv(path, [{c: {**row, "campaign_id": cid}[c] for c in COLUMNS} for cid in campaign_ids])
    return path


def tokens(signer: TokenSigner, campaign_ids: list[str], count: int) -> list[str]:
    """``count`` distinct request ids, spread round-robin over the campaigns."""
    now_ms = int(time.time() * 1000)
    prefix = uuid.uuid4().hex[:8]
    return [
        signer.issue(
            RequestToken(
                nonce=f"{prefix}{i:x}",
                campaign_id=campaign_ids[i % len(campaign_ids)],
                campaign_version=1,
                issued_ms=now_ms,
                user_id=f"u{i % 1000}",
                clearing_cpm_units=17_500,
                auction_cpc_micros=100,
                auction_cpa_micros=2000,
            )
        )
        for i in range(count)
    ]


def write_feedback_script(path: Path, request_ids: list[str], threads: int) -> Path:
    """Each wrk thread POSTs its own slice of the ids, in order: no id is sent twice.

    The slices are plain files beside the script (``<stem>-<thread>.ids``, one path a line), each read by
    its thread's ``init`` (~0.1 s). As a Lua table literal in the script, 400,000 ids (64 MB) took wrk ~2 s
    of CPU to compile, once in its main Lua state and once in each thread's, inside the window whose CPU
    the bench reports (``bench.cpu_share``: wrk's share read ~1.6x too high); and wrk starts its first
    thread before it creates the next, so that thread loaded the server alone for ~0.6 s that wrk counts
    but does not time (a POST's rate read 1.5-2% high, BENCHMARKS.md)."""
    per = len(request_ids) // threads
    stem = str(path.with_name(f"{path.stem}-"))  # thread t's file: stem + t + ".ids", here and in the Lua
    for t in range(threads):
        lines = "".join(f"/ad/{rid}/feedback\n" for rid in request_ids[t * per : (t + 1) * per])
        Path(f"{stem}{t}.ids").write_text(lines, encoding="ascii")
    # A JSON string of an ASCII path is a valid Lua string literal.
    prefix = json.dumps(stem)
    path.write_text(
        f"local prefix = {prefix}\nlocal paths = {{}}\nlocal n = 0\nlocal i = 0\nlocal t = 0\n"
        "setup = function(thread) thread:set('tid', t); t = t + 1 end\n"
        "init = function(args)\n"
        "  for line in io.lines(prefix .. (tid or 0) .. '.ids') do n = n + 1; paths[n] = line end\n"
        "end\n"
        f"wrk.method = 'POST'\nwrk.body = '{BODY}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        "request = function()\n  i = i + 1\n  if i > n then i = 1 end\n"
        "  return wrk.format(nil, paths[i])\nend\n" + _DONE,
        encoding="utf-8",
    )
    return path


def row(name: str, r: WrkResult, reference: WrkResult | None) -> dict[str, object]:
    return {
        "case": name,
        "requests_per_s": round(r.rps),
        "p50_ms": r.p50_us / 1000,
        "p99_ms": r.p99_us / 1000,
        "non_2xx": r.non_2xx,
        "errors": r.connect_errors + r.read_errors + r.write_errors + r.timeouts,
        "ratio_to_minimal": round(r.rps / reference.rps, 3) if reference else 1.0,
    }


def ratio_to_post(r: dict[str, object], post: WrkResult) -> dict[str, object]:
    """``r`` with its ratio to the minimal app's POST of the same requests (the like-for-like reference)."""
    return {**r, "ratio_to_minimal_post": round(int(str(r["requests_per_s"])) / max(post.rps, 1.0), 3)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feedback_http", description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=400_000, help="distinct request ids (> rate × time)")
    parser.add_argument(
        "--server", choices=["uvicorn", "granian"], action="append", help="repeatable (default: uvicorn)"
    )
    parser.add_argument(
        "--campaigns", type=int, default=1,
        help="campaigns the feedback is spread over (1: one Redis hash and one partition, the worst case)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; >1 adds the medians")
    parser.add_argument("--label", default="", help="suffix of the results file name")
    parser.add_argument(
        "--baseline-tree", type=Path, default=None,
        help="another checkout whose feedback server runs beside this tree's in every round",
    )  # fmt: skip
    parser.add_argument(
        "--durable", action="store_true",
        help="also run bench.minimal_durable in every round: the minimal app's POST with the same two "
        "durable writes, written the plain way (a Redis script call per batch, an acks=all event each)",
    )  # fmt: skip
    add_client_policy(parser)
    add_broker_warm_up(parser)
    args = parser.parse_args(argv)
    # Its own database and Redis database (the servers it starts inherit them), never the user's: its
    # campaign's row and budget, the debits and the de-duplication keys all go there.
    with sandbox_environment("bench"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    servers: list[str] = args.server or ["uvicorn"]
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.baseline_tree is not None:
        trees = [(BASELINE, args.baseline_tree.resolve()), ("", None)]
    base = load_config()
    config = base.namespaced(f"benchfb{int(time.time())}-")
    campaign_ids = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(args.campaigns)]
    env = {"ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix}
    rows: list[dict[str, object]] = []

    def measure(url: str, script: Path) -> WrkResult:
        return run_wrk_as(args, url, script, duration_s=args.duration)

    def show(r: dict[str, object]) -> None:
        versus = f"  vs POST {r['ratio_to_minimal_post']}" if "ratio_to_minimal_post" in r else ""
        versus += f"  vs baseline {r['ratio_to_baseline']}" if "ratio_to_baseline" in r else ""
        print(
            f"{r['case']:<41} {r['requests_per_s']:>8,} req/s  p50 {r['p50_ms']:.2f} ms  "
            f"p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']}  ratio {r['ratio_to_minimal']}{versus}"
        )

    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(asyncio.run(seed(config, campaign_file(Path(tmp) / "c.csv", campaign_ids), rebase=False)))
            signer = TokenSigner(config.token_keys, ttl_s=config.token_ttl_s)
            get_script = write_script(Path(tmp) / "serve.lua", make_paths(2_000))
            # The minimal app checks no id, so one script serves every round (the feedback's are fresh).
            post_script = write_feedback_script(
                Path(tmp) / "minimal-post.lua", tokens(signer, campaign_ids, args.tokens), args.threads
            )
            warm_s = broker_warm_up_s(base, args.broker_warm_up)
            if warm_s:  # this tree's feedback server, fresh ids: the broker's hot paths, not the rounds'
                warm_script = write_feedback_script(
                    Path(tmp) / "warm-up.lua", tokens(signer, campaign_ids, args.tokens), args.threads
                )
                port = free_port()
                with server_process("adserver.app:app", servers[0], port, workers=args.workers, env=env,
                                    ready_path="/readyz"):  # fmt: skip
                    run_wrk_as(args, f"http://127.0.0.1:{port}", warm_script, duration_s=warm_s)
            for n in range(1, args.rounds + 1):
                tag = f" #{n}" if args.rounds > 1 else ""
                port = free_port()
                with server_process("bench.minimal_app:app", "uvicorn", port, workers=args.workers, env={},
                                    ready_path="/ad/user/warmup/serve"):  # fmt: skip
                    url = f"http://127.0.0.1:{port}"
                    run_wrk_as(args, url, get_script, duration_s=2)
                    minimal = measure(url, get_script)
                    minimal_post = measure(url, post_script)
                rows.append(row(f"minimal starlette (GET){tag}", minimal, None))
                show(rows[-1])
                rows.append(row(f"{MINIMAL_POST}{tag}", minimal_post, minimal))
                show(rows[-1])
                if args.durable:
                    durable_script = write_feedback_script(  # fresh ids: each request's SET NX writes
                        Path(tmp) / "durable.lua", tokens(signer, campaign_ids, args.tokens), args.threads
                    )
                    port = free_port()
                    with server_process("bench.minimal_durable:app", "uvicorn", port, workers=args.workers,
                                        env=env, ready_path="/ad/user/warmup/serve") as proc:  # fmt: skip
                        load = functools.partial(measure, f"http://127.0.0.1:{port}", durable_script)
                        since = time.time()
                        result, cpu = measure_cpu(proc.pid, load, time.monotonic)
                        stalls = asyncio.run(stalls_since(config.redis_url, since))
                    rows.append(ratio_to_post(row(f"{DURABLE}{tag}", result, minimal), minimal_post))
                    rows[-1]["cpu_s"] = cpu.as_dict()
                    if stalls is not None:
                        rows[-1]["redis_stalls"] = stalls.as_dict()
                    show(rows[-1])
                    print(f"  {cpu.line()}")
                    if stalls is not None:  # the same writes meet the same disk
                        print(f"  {stalls.line()}")
                for server in servers:
                    # The order alternates by round, so neither tree always meets the machine first.
                    done: dict[str, dict[str, object]] = {}
                    for suffix, cwd in trees if n % 2 else trees[::-1]:
                        fb_script = write_feedback_script(  # fresh ids each round: never a duplicate
                            Path(tmp) / f"feedback-{server}.lua",
                            tokens(signer, campaign_ids, args.tokens),
                            args.threads,
                        )
                        port = free_port()
                        with server_process("adserver.app:app", server, port, workers=args.workers, env=env,
                                            ready_path="/readyz", cwd=cwd) as proc:  # fmt: skip
                            load = functools.partial(measure, f"http://127.0.0.1:{port}", fb_script)
                            since = time.time()
                            result, cpu = measure_cpu(proc.pid, load, time.monotonic)
                            stalls = asyncio.run(stalls_since(config.redis_url, since))
                            metrics = read_once(f"http://127.0.0.1:{port}/metrics")
                            stages = feedback_stages(metrics)
                            tails = feedback_stage_quantiles(metrics, None, 0.99)
                        rows.append(
                            ratio_to_post(row(f"feedback (POST, {server}){suffix}{tag}", result, minimal),
                                          minimal_post)
                        )  # fmt: skip
                        rows[-1]["cpu_s"] = cpu.as_dict()
                        if stages:
                            rows[-1]["batch_stages"] = stages
                        if tails:
                            rows[-1]["batch_stages_p99"] = tails
                        if stalls is not None:
                            rows[-1]["redis_stalls"] = stalls.as_dict()
                        done[suffix] = rows[-1]
                        if len(done) == 2:
                            ours, before = done[""], done[BASELINE]
                            ours["ratio_to_baseline"] = round(
                                int(str(ours["requests_per_s"])) / max(int(str(before["requests_per_s"])), 1),
                                3,
                            )
                        show(rows[-1])
                        print(f"  {cpu.line()}")
                        if stages:
                            print(f"  {format_feedback_stages(stages, tails)}")
                        if stalls is not None:
                            print(f"  {stalls.line()}")
    finally:
        asyncio.run(delete_topics(config))
        asyncio.run(delete_campaign_keys(config, campaign_ids))
    if args.rounds > 1:
        cases = [f"feedback (POST, {server}){suffix}" for server in servers for suffix, _ in trees]
        durable = [DURABLE] if args.durable else []
        for case in ["minimal starlette (GET)", MINIMAL_POST, *durable, *cases]:
            rows.append(median_row(case, [r for r in rows if str(r["case"]).startswith(f"{case} #")]))
            show(rows[-1])
    settings = {
        **vars(args),
        "baseline_tree": None if args.baseline_tree is None else str(args.baseline_tree),
    }
    save_results("feedback-http", settings, rows, label=args.label)
    return 0


def median_row(case: str, rounds: list[dict[str, object]]) -> dict[str, object]:
    """Each column's median over the rounds (columns apart: the median run need not have the median p99)."""

    def med(key: str) -> float:
        return statistics.median(float(str(r[key])) for r in rounds)

    rates = [int(str(r["requests_per_s"])) for r in rounds]
    return {
        "case": f"{case} median of {len(rounds)}",
        "requests_per_s": round(med("requests_per_s")),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "non_2xx": sum(int(str(r["non_2xx"])) for r in rounds),
        "errors": sum(int(str(r["errors"])) for r in rounds),
        "ratio_to_minimal": round(med("ratio_to_minimal"), 3),
        "requests_per_s_range": [min(rates), max(rates)],
        **{
            key: round(med(key), 3)
            for key in ("ratio_to_minimal_post", "ratio_to_baseline")
            if key in rounds[0]
        },
    }


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
