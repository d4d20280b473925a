"""HTTP throughput of the ad server against a minimal Starlette app, measured in one run with ``wrk``.

``python -m bench.http`` (``make bench-http``): for each server (uvicorn, and granian when installed),
(a) the minimal app of ``bench.minimal_app``, (b) the serve endpoint over the seed campaigns
(``../shared/data/campaigns_seed.csv``, dates rebased; 4,242 generated ones if the file is absent) and
(c) over 100,000 generated campaigns, each seeded producer → manager under a bench-only topic prefix
(deleted afterwards). Same settings everywhere: N workers, uvloop, httptools, no access log; wrk on
127.0.0.1 with bounded duration. The cases run in interleaved rounds and each keeps its best round, so
a burst of other load on the machine does not decide a ratio. Prints a table; saves JSON under
``bench/results/``.

References in the same run: the minimal app (``ratio``); when nginx is installed, nginx ``return 200``
with a body as long as a typical serve answer (``bench.nginx``; ``nginx`` column, its own row); and when
granian is, a bare granian RSGI app answering the same body (``bench.minimal_rsgi``; ``rsgi`` column, its
own row); and a raw uvloop protocol answering it too (``bench.minimal_protocol``, its own row; ``--raw
no`` skips it): the machine's HTTP ceiling, a bare Python handler behind granian, and what a Python server
on the event loop pays for its sockets alone. After the table, each row's rate over nginx's in the same
round and their median.
``--baseline-tree DIR`` also serves every ad-server case from another checkout (``git archive <commit> |
tar -x -C DIR``), interleaved with this one, and prints each case's ratio to its baseline.
After each ad-server run, the share of its served ads Kafka acknowledged (``served_ads_published``, from
the server's ``/metrics``): a serve rate counts only with every served ad still published.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admin.scrape import latency_quantile, read_once
from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.kafka import delete_topics
from adplatform.ports import free_port
from adplatform.sandbox import sandbox_environment
from adserver.http.server import Server
from adserver.http.server import run as run_server
from bench.http_stack import save_results, seed, server_process, write_corpus
from bench.nginx import nginx_installed, nginx_process, typical_body
from bench.wrk import WrkResult, add_client_policy, make_paths, run_wrk_as, write_script

MINIMAL = "bench.minimal_app:app"
ADSERVER = "adserver.app:app"
NGINX = "nginx"
NGINX_CASE = "nginx return 200"
RSGI = "bench.minimal_rsgi:app"
RSGI_CASE = "bare rsgi fixed json"
#: ``run-server`` kind of the RSGI reference (granian with the RSGI interface); its rows say ``granian``.
RSGI_SERVER = "granian-rsgi"
RAW = "bench.minimal_protocol"
RAW_CASE = "raw uvloop protocol fixed json"
#: ``run-server`` kind of the raw protocol reference (``bench.minimal_protocol``); its rows say ``uvloop``.
RAW_SERVER = "uvloop-raw"
#: ``run-server`` kind of ``bench.rsgi_serve`` (the ad server under granian RSGI, a prototype).
RSGI_SERVE_SERVER = "granian-rsgi-serve"
BASELINE = " (baseline)"


@dataclass(frozen=True)
class Case:
    name: str
    app: str
    env: dict[str, str]
    #: Another checkout to run the server from (the baseline of ``--baseline-tree``).
    cwd: Path | None = None


@dataclass(frozen=True)
class Measured:
    result: WrkResult
    server_cpu_us_per_request: float
    load_average: float
    #: Ad server only: the share of its served ads (warm-up included) Kafka acknowledged on
    #: ``served-ads``, so a faster server is seen to still publish every ad it serves.
    published: float | None = None
    #: Ad server only: the p99 of serve's own latency over the measured run (its ``/metrics`` histogram, a
    #: worker's read of a request to its answer, linear within a bucket): wrk's p99 far above it is time
    #: outside the server's handling (waiting for a core, in the socket queues).
    server_p99_ms: float | None = None


#: Longest wait after a run for the served-ads publisher's last acknowledgements (it lingers 50 ms).
PUBLISH_WAIT_S = 10.0


def served_ads_published(url: str, timeout_s: float = PUBLISH_WAIT_S) -> float:
    """Served ads Kafka acknowledged / ads served, from the server's ``/metrics`` (summed over its
    workers), once every served ad is accounted for (sent, failed or dropped) or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot = read_once(f"{url}/metrics")
        served = snapshot.total("adserver_ads_served_total") or 0.0
        sent = snapshot.total("adserver_served_ads_sent_total") or 0.0
        settled = sent + sum(
            snapshot.total(f"adserver_served_ads_{k}_total") or 0.0 for k in ("failed", "dropped")
        )
        if (served and settled >= served) or time.monotonic() > deadline:
            return sent / served if served else 0.0
        time.sleep(0.25)


def _cpu_s(session: int) -> float:
    """User + system CPU seconds of every process in the server's session (it leads its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) == session:  # fields after "(comm)": state ppid pgrp session ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(case: Case, server: str, script: Path, args: argparse.Namespace) -> Measured:
    port = free_port()
    ready = "/readyz" if case.app == ADSERVER else "/ad/user/warmup/serve"
    if case.app == NGINX:
        started = nginx_process(port, workers=args.workers, body=typical_body())
    elif case.app == RSGI:
        started = server_process(case.app, RSGI_SERVER, port, workers=args.workers, ready_path=ready)
    elif case.app == RAW:
        started = server_process(case.app, RAW_SERVER, port, workers=args.workers, ready_path=ready)
    else:
        started = server_process(
            case.app, server, port, workers=args.workers, env=case.env, ready_path=ready, cwd=case.cwd
        )
    with started as proc:
        url = f"http://127.0.0.1:{port}"
        run_wrk_as(args, url, script, duration_s=args.warmup)
        metrics = read_once(f"{url}/metrics") if case.app == ADSERVER else None
        before = _cpu_s(proc.pid)
        result = run_wrk_as(args, url, script, duration_s=args.duration)
        cpu_us = (_cpu_s(proc.pid) - before) / max(result.requests, 1) * 1e6
        load = os.getloadavg()[0]
        published = served_ads_published(url) if case.app == ADSERVER else None
        own = None if metrics is None else latency_quantile(read_once(f"{url}/metrics"), metrics, 0.99)
    return Measured(result, cpu_us, load, published, None if own is None else own * 1000)


def round_line(round_no: int, server: str, case: str, m: Measured) -> str:
    """One measured run, as printed while the rounds go: its rate, p99 and the machine's load after it
    (the table keeps each case's best round only, so a round's p99 is seen here)."""
    r = m.result
    published = "" if m.published is None else f", served ads published {m.published:.2%}"
    published += "" if m.server_p99_ms is None else f", the server's own p99 {m.server_p99_ms:.2f} ms"
    return (
        f"round {round_no} {server:<8} {case:<43} {r.rps:>8,.0f} req/s p99 {r.p99_us / 1000:6.2f} ms "
        f"(load {m.load_average:.1f}{published})"
    )


def _row(
    case: str,
    server: str,
    m: Measured,
    reference: Measured | None,
    rounds: int,
    nginx: Measured | None,
    rsgi: Measured | None = None,
) -> dict[str, Any]:
    r = m.result
    return {
        "case": case,
        "server": server,
        "requests_per_s": round(r.rps),
        "p50_ms": r.p50_us / 1000,
        "p99_ms": r.p99_us / 1000,
        "fill": round(1 - r.non_2xx / r.requests, 3) if r.requests else 0.0,
        "errors": r.connect_errors + r.read_errors + r.write_errors + r.timeouts,
        "ratio_to_minimal": round(r.rps / reference.result.rps, 3) if reference else 1.0,
        "ratio_to_nginx": round(r.rps / nginx.result.rps, 3) if nginx else None,
        "ratio_to_rsgi": round(r.rps / rsgi.result.rps, 3) if rsgi else None,
        "p99_to_minimal": round(r.p99_us / reference.result.p99_us, 2) if reference else None,
        "server_cpu_us_per_request": round(m.server_cpu_us_per_request, 1),
        "served_ads_published": None if m.published is None else round(m.published, 4),
        "server_p99_ms": None if m.server_p99_ms is None else round(m.server_p99_ms, 2),
        "load_average_after": round(m.load_average, 2),
        "best_of_rounds": rounds,
    }


def add_round_ratios(
    rows: list[dict[str, Any]], nginx_rounds: list[float], by_round: dict[tuple[str, str], list[float]]
) -> None:
    """Each server row's rate over nginx's in the same round, and their median: nginx's own rate moves
    by up to 1.5x between the rounds of one run on this machine, so its best round alone is a jumpy
    reference for the table's ``nginx`` column."""
    for row in rows:
        if row["case"] == NGINX_CASE:
            continue
        rates = by_round.get((row["case"], row["server"]), [])
        ratios = [round(rate / ref, 3) for rate, ref in zip(rates, nginx_rounds, strict=False) if ref]
        if ratios:
            row["nginx_ratio_by_round"] = ratios
            row["nginx_ratio_median"] = round(statistics.median(ratios), 3)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = (
        ("req/s", 8), ("p50 ms", 7), ("p99 ms", 7), ("fill", 5), ("ratio", 6), ("nginx", 6), ("rsgi", 6),
        ("p99/min", 7), ("cpu µs", 7),
    )  # fmt: skip
    print(f"\n{'case':<43} {'server':<8} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for r in rows:
        nginx = "" if r["ratio_to_nginx"] is None else f"{r['ratio_to_nginx']:.3f}"
        rsgi = "" if r.get("ratio_to_rsgi") is None else f"{r['ratio_to_rsgi']:.3f}"
        p99 = "" if r.get("p99_to_minimal") is None else f"{r['p99_to_minimal']:.2f}"
        print(
            f"{r['case']:<43} {r['server']:<8} {r['requests_per_s']:>8,} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['fill']:>5.2f} {r['ratio_to_minimal']:>6.2f} {nginx:>6} {rsgi:>6} "
            f"{p99:>7} {r['server_cpu_us_per_request']:>7.1f}"
        )


def run_server_process(argv: list[str]) -> int:
    app, server, port, workers = argv[:4]
    options: dict[str, object] = json.loads(argv[4]) if len(argv) > 4 else {}
    if server == RAW_SERVER:
        from bench.minimal_protocol import serve

        return serve(int(port), int(workers))
    if server == RSGI_SERVER:
        from granian import Granian
        from granian.constants import Interfaces

        from adplatform.process import logging_config
        from adserver.http.server import granian_settings

        Granian(
            app, address="127.0.0.1", port=int(port), interface=Interfaces.RSGI, workers=int(workers),
            log_dictconfig=logging_config("WARNING"), **granian_settings(options),
        ).serve()  # fmt: skip
        return 0
    if server == RSGI_SERVE_SERVER:  # the prototype of bench.rsgi_serve (bench.granian_tuning)
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings

        from adplatform.config import load_config
        from adplatform.process import logging_config
        from adserver.http.server import granian_settings, metrics_directory

        timeout_ms = load_config().client_timeout_s * 1000
        with metrics_directory():
            Granian(
                "bench.rsgi_serve:app", address="127.0.0.1", port=int(port), interface=Interfaces.RSGI,
                workers=int(workers), log_dictconfig=logging_config("WARNING"),
                http1_settings=HTTP1Settings(header_read_timeout=timeout_ms), **granian_settings(options),
            ).serve()  # fmt: skip
        return 0
    kind: Server = "granian" if server == "granian" else "uvicorn"
    run_server(
        host="127.0.0.1", port=int(port), workers=int(workers), server=kind, app=app, log_level="WARNING",
        granian=options,
    )  # fmt: skip
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["run-server"]:  # internal: the server subprocess
        return run_server_process(argv[1:6])
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each case keeps its best")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--campaigns", type=int, default=100_000, help="size of the generated corpus")
    parser.add_argument("--servers", default="auto", help="comma list of uvicorn,granian (auto: installed)")
    parser.add_argument(
        "--sample-rates",
        default="",
        help="comma list of ADP_REQUEST_SAMPLE_RATE values: each serve case runs once per rate "
        "(e.g. 0,0.01 for the cost of request sampling); default: the environment's",
    )
    parser.add_argument(
        "--capped-share", type=float, default=0.0,
        help="also serve the generated corpus with this share of campaigns frequency-capped and every "
        "campaign even-paced (same campaigns, same run; its ratio to the generated corpus, uncapped and "
        "asap, is printed); 0: no such case",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-tree", type=Path, default=None,
        help="another checkout (e.g. git archive <commit> | tar -x -C DIR): every ad-server case also runs "
        "from it, interleaved, and its ratio to the baseline is printed",
    )  # fmt: skip
    parser.add_argument(
        "--nginx", choices=("auto", "yes", "no"), default="auto",
        help="the nginx return-200 reference (auto: when nginx is installed)",
    )  # fmt: skip
    parser.add_argument(
        "--rsgi", choices=("auto", "yes", "no"), default="auto",
        help="the bare granian RSGI reference (auto: when granian is installed)",
    )  # fmt: skip
    parser.add_argument(
        "--raw", choices=("yes", "no"), default="yes",
        help="the raw uvloop protocol reference (bench.minimal_protocol): Python's floor on this machine",
    )  # fmt: skip
    add_client_policy(parser)
    args = parser.parse_args(argv)
    servers = ["uvicorn"] + (["granian"] if importlib.util.find_spec("granian") else [])
    if args.servers != "auto":
        servers = args.servers.split(",")
    # Its own database and Redis database (the ad servers it starts inherit them), never the user's.
    with sandbox_environment("bench"):
        return _run(args, servers)


def _run(args: argparse.Namespace, servers: list[str]) -> int:
    base = load_config()
    tag = f"bench{int(time.time())}"
    # (corpus size, capped share) per ad-server case: the seed, the generated corpus, and capped.
    # --campaigns 0: the seed corpus alone (a quicker run).
    corpora: list[tuple[int | None, float]] = [(None, 0.0)] + (
        [(args.campaigns, 0.0)] if args.campaigns else []
    )
    if args.capped_share > 0 and args.campaigns:
        corpora.append((args.campaigns, args.capped_share))
    configs = [base.namespaced(f"{tag}-{i}-") for i in range(len(corpora))]
    cases = [Case("minimal starlette", MINIMAL, {})]
    use_nginx = args.nginx == "yes" or (args.nginx == "auto" and nginx_installed())
    if args.nginx == "auto" and not use_nginx:
        # `stack up` unpacks Debian's nginx binary (never installs the package, which would start the
        # system's nginx on port 80 under systemd); where it could not, there is none to run.
        print("nginx reference skipped: no nginx (`stack up` fetches it; or --nginx no)", flush=True)
    use_rsgi = args.rsgi == "yes" or (args.rsgi == "auto" and importlib.util.find_spec("granian") is not None)
    references = (
        ([(NGINX_CASE, NGINX, NGINX)] if use_nginx else [])
        + ([(RSGI_CASE, RSGI, "granian")] if use_rsgi else [])
        + ([(RAW_CASE, RAW, "uvloop")] if args.raw == "yes" else [])
    )
    best: dict[tuple[str, str], Measured] = {}
    #: Every round's rate per (case, server), in round order: the same-round ratios to nginx.
    by_round: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = write_script(Path(tmp) / "serve.lua", make_paths(2_000))
            for config, (count, share) in zip(configs, corpora, strict=True):
                # The capped case is also all even-paced: the delivery controls' whole cost, same run.
                file, rebase = write_corpus(
                    Path(tmp) / f"{config.topics.prefix}.csv", count, capped_share=share,
                    pacing_mode="even" if share else "asap",
                )  # fmt: skip
                name = "serve seed" if count is None else f"serve {count // 1000}k generated"
                name += f" {share:.0%} capped, even" if share else ""
                print(f"{name}: {file.name}: {asyncio.run(seed(config, file, rebase=rebase))}", flush=True)
                env = {"ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix}
                if not args.sample_rates:
                    cases.append(Case(name, ADSERVER, env))
                for rate in filter(None, args.sample_rates.split(",")):
                    cases.append(Case(f"{name} @{rate}", ADSERVER, {**env, "ADP_REQUEST_SAMPLE_RATE": rate}))
            if args.baseline_tree is not None:
                tree = args.baseline_tree.resolve()
                cases += [Case(c.name + BASELINE, c.app, c.env, tree) for c in cases if c.app == ADSERVER]
            for round_no in range(1, args.rounds + 1):
                # The machine's ceiling and the bare Python handler's: once per round, whatever the server.
                for ref_case, ref_app, ref_server in references:
                    m = measure(Case(ref_case, ref_app, {}), ref_server, script, args)
                    print(round_line(round_no, ref_server, ref_case, m), flush=True)
                    key = (ref_case, ref_server)
                    by_round.setdefault(key, []).append(m.result.rps)
                    if key not in best or m.result.rps > best[key].result.rps:
                        best[key] = m
                for server in servers:
                    for case in cases:
                        m = measure(case, server, script, args)
                        print(round_line(round_no, server, case.name, m), flush=True)
                        key = (case.name, server)
                        by_round.setdefault(key, []).append(m.result.rps)
                        if key not in best or m.result.rps > best[key].result.rps:
                            best[key] = m
    finally:
        for config in configs:
            asyncio.run(delete_topics(config))
    nginx = best.get((NGINX_CASE, NGINX))
    rsgi = best.get((RSGI_CASE, "granian"))
    rows = [_row(NGINX_CASE, NGINX, nginx, None, args.rounds, nginx, rsgi)] if nginx else []
    rows += [_row(RSGI_CASE, "granian", rsgi, None, args.rounds, nginx, rsgi)] if rsgi else []
    raw = best.get((RAW_CASE, "uvloop"))
    rows += [_row(RAW_CASE, "uvloop", raw, None, args.rounds, nginx, rsgi)] if raw else []
    rows += [
        _row(
            case.name,
            s,
            best[(case.name, s)],
            best[(cases[0].name, s)] if i else None,
            args.rounds,
            nginx,
            rsgi,
        )
        for s in servers
        for i, case in enumerate(cases)
    ]
    if args.baseline_tree is not None:
        by_key = {(r["case"], r["server"]): r for r in rows}
        for row in rows:
            twin = by_key.get((row["case"] + BASELINE, row["server"]))
            if twin is not None:
                row["ratio_to_baseline"] = round(row["requests_per_s"] / twin["requests_per_s"], 3)
    if args.capped_share > 0 and args.campaigns:
        uncapped = cases[2].name
        for row in rows:
            if row["case"] == cases[3].name:
                reference = next(r for r in rows if r["case"] == uncapped and r["server"] == row["server"])
                row["ratio_to_uncapped"] = round(row["requests_per_s"] / reference["requests_per_s"], 3)
    if nginx is not None:
        add_round_ratios(rows, by_round[(NGINX_CASE, NGINX)], by_round)
    print_table(rows)
    for row in rows:
        if row.get("nginx_ratio_by_round"):
            rounds = " / ".join(f"{x:.3f}" for x in row["nginx_ratio_by_round"])
            print(
                f"{row['server']}: {row['case']} / nginx of the same round: {rounds} "
                f"(median {row['nginx_ratio_median']:.3f})"
            )
    for row in rows:
        if "ratio_to_baseline" in row:
            twin = next(
                r for r in rows if r["case"] == row["case"] + BASELINE and r["server"] == row["server"]
            )
            print(
                f"{row['server']}: {row['case']} / baseline, same run: {row['ratio_to_baseline']:.3f} "
                f"(p99 {row['p99_ms']:.2f} ms vs {twin['p99_ms']:.2f} ms)"
            )
    for row in rows:
        if "ratio_to_uncapped" in row:
            print(f"{row['server']}: {row['case']} / uncapped, same run: {row['ratio_to_uncapped']:.3f}")
    tree = args.baseline_tree
    save_results("http", {**vars(args), "baseline_tree": None if tree is None else str(tree)}, rows)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
