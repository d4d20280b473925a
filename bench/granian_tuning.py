"""granian settings compared in one run: the bare RSGI reference under each, beside nginx (issue 18).

``python -m bench.granian_tuning``: nginx ``return 200`` and the bare RSGI app of ``bench.minimal_rsgi``
under each named set of granian settings (over ``adserver.http.server.GRANIAN_SETTINGS``), same body,
same wrk script and settings as ``bench.http``, in interleaved rounds; each case keeps its median round.
``--serve`` adds the ad server on the seed corpus (uvicorn's direct path, granian ASGI and granian RSGI,
each with the settings of ``--serve-settings``). Each row also shows the CPU the server and wrk used per
request, and wrk's share of the machine: on 2 cores wrk's own threads compete with the server's.
Loads only 127.0.0.1; prints a table and saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.kafka import delete_topics
from adplatform.ports import free_port
from adplatform.sandbox import sandbox_environment
from bench.http import ADSERVER, MINIMAL, RSGI, RSGI_SERVER, _cpu_s
from bench.http_stack import save_results, seed, server_process, write_corpus
from bench.nginx import nginx_process, typical_body
from bench.wrk import WrkResult, add_client_policy, make_paths, run_wrk_as, write_script

#: Named settings tried for the bare RSGI app (over GRANIAN_SETTINGS; granian's defaults otherwise).
SETTINGS: dict[str, dict[str, object]] = {
    "default": {},
    "st": {"runtime_mode": "st"},
    "rust-task": {"task_impl": "rust"},
    "mt": {"runtime_mode": "mt"},
    "mt 2-threads": {"runtime_mode": "mt", "runtime_threads": 2},
    "st 2-threads": {"runtime_mode": "st", "runtime_threads": 2},
    "http1 no-ws": {"http": "1", "websockets": False},
    "backpressure 32": {"backpressure": 32},
    "asyncio loop": {"loop": "asyncio"},
    "rust http1 no-ws": {"task_impl": "rust", "http": "1", "websockets": False},
}

Starter = Callable[[int], AbstractContextManager[Popen[bytes]]]


@dataclass(frozen=True)
class Round:
    result: WrkResult
    server_cpu_us: float
    wrk_cpu_us: float


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(start: Starter, script: Path, args: argparse.Namespace) -> Round:
    port = free_port()
    with start(port) as proc:
        url = f"http://127.0.0.1:{port}"
        run_wrk_as(args, url, script, duration_s=args.warmup)
        server_before, wrk_before = _cpu_s(proc.pid), _children_cpu_s()
        result = run_wrk_as(args, url, script, duration_s=args.duration)
        # Only wrk is reaped while it runs, so the children's CPU delta is wrk's.
        wrk_s, server_s = _children_cpu_s() - wrk_before, _cpu_s(proc.pid) - server_before
    n = max(result.requests, 1)
    return Round(result, server_s / n * 1e6, wrk_s / n * 1e6)


def _server(
    app: str,
    server: str,
    port: int,
    *,
    workers: int,
    ready_path: str,
    options: str,
    env: dict[str, str] | None = None,
) -> AbstractContextManager[Popen[bytes]]:
    return server_process(app, server, port, workers=workers, env=env, ready_path=ready_path, options=options)


def _cases(args: argparse.Namespace, serve_env: dict[str, str]) -> dict[str, Starter]:
    workers = args.workers
    cases: dict[str, Starter] = {
        "nginx return 200": lambda p: nginx_process(p, workers=workers, body=typical_body())
    }
    for name in filter(None, args.settings.split(",")):
        options = json.dumps(SETTINGS[name])
        cases[f"bare rsgi [{name}]"] = functools.partial(
            _server, RSGI, RSGI_SERVER, workers=workers, ready_path="/ad/user/warmup/serve", options=options
        )
    if args.serve:
        wanted = args.serve.split(",")
        if "minimal" in wanted:  # bench.http's reference: the minimal Starlette app on uvicorn
            cases["minimal starlette uvicorn"] = functools.partial(
                _server, MINIMAL, "uvicorn", workers=workers, ready_path="/ad/user/warmup/serve", options=""
            )
        if "uvicorn" in wanted:
            cases["serve uvicorn direct"] = functools.partial(
                _server, ADSERVER, "uvicorn", workers=workers, env=serve_env, ready_path="/readyz", options=""
            )
        for name in args.serve_settings.split(","):
            for label, server in (("asgi", "granian"), ("rsgi", "granian-rsgi-serve")):
                if server in wanted:
                    cases[f"serve granian {label} [{name}]"] = functools.partial(
                        _server, ADSERVER, server, workers=workers, env=serve_env, ready_path="/readyz",
                        options=json.dumps(SETTINGS[name]),
                    )  # fmt: skip
    return cases


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.granian_tuning", description=__doc__)
    parser.add_argument("--duration", type=int, default=6, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; each case keeps its median"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma list of: {', '.join(SETTINGS)}"
    )
    parser.add_argument(
        "--serve",
        default="",
        help="comma list of minimal,uvicorn,granian,granian-rsgi-serve: the minimal Starlette app and "
        "ad-server cases (seed corpus)",
    )
    parser.add_argument(
        "--serve-settings", default="default", help="comma list: the granian serve cases run under each"
    )
    add_client_policy(parser)
    args = parser.parse_args(argv)
    with sandbox_environment("bench"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    config = load_config().namespaced(f"tune{int(time.time())}-")
    env = {"ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix}
    rounds: dict[str, list[Round]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = write_script(Path(tmp) / "serve.lua", make_paths(2_000))
            if args.serve:
                file, rebase = write_corpus(Path(tmp) / "seed.csv", None)
                print(f"seed: {asyncio.run(seed(config, file, rebase=rebase))}", flush=True)
            cases = _cases(args, env)
            for round_no in range(1, args.rounds + 1):
                for name, start in cases.items():
                    r = measure(start, script, args)
                    rounds.setdefault(name, []).append(r)
                    load = os.getloadavg()[0]
                    print(f"round {round_no} {name:<40} {r.result.rps:>9,.0f} req/s p99 "
                          f"{r.result.p99_us / 1000:6.2f} ms (load {load:.1f})", flush=True)  # fmt: skip
    finally:
        if args.serve:
            asyncio.run(delete_topics(config))
    rows = _rows(rounds, args.duration)
    head = (
        ("req/s", 9),
        ("p50 ms", 7),
        ("p99 ms", 7),
        ("fill", 5),
        ("nginx", 6),
        ("srv µs", 7),
        ("wrk µs", 7),
        ("wrk %", 6),
    )
    print(f"\n{'case':<40} " + " ".join(f"{n:>{w}}" for n, w in head) + "  rounds")
    for w in rows:
        print(f"{w['case']:<40} {w['requests_per_s']:>9,} {w['p50_ms']:>7.2f} {w['p99_ms']:>7.2f} "
              f"{w['fill']:>5.2f} {w['ratio_to_nginx']:>6.3f} "
              f"{w['server_cpu_us_per_request']:>7.1f} {w['wrk_cpu_us_per_request']:>7.1f} "
              f"{w['wrk_share_of_machine']:>6.0%}  {w['rounds_rps']}")  # fmt: skip
    save_results("granian-tuning", vars(args), rows)
    return 0


def _rows(rounds: dict[str, list[Round]], duration_s: int) -> list[dict[str, Any]]:
    def median(name: str) -> Round:
        ordered = sorted(rounds[name], key=lambda r: r.result.rps)
        return ordered[len(ordered) // 2]

    nginx = median("nginx return 200").result.rps
    cpus = os.cpu_count() or 1
    rows = []
    for name in rounds:
        m = median(name)
        rows.append({
            "case": name,
            "requests_per_s": round(m.result.rps),
            "p50_ms": m.result.p50_us / 1000,
            "p99_ms": m.result.p99_us / 1000,
            "errors": m.result.connect_errors + m.result.read_errors + m.result.timeouts,
            "fill": round(1 - m.result.non_2xx / m.result.requests, 3) if m.result.requests else 0.0,
            "ratio_to_nginx": round(m.result.rps / nginx, 3),
            "server_cpu_us_per_request": round(m.server_cpu_us, 1),
            "wrk_cpu_us_per_request": round(m.wrk_cpu_us, 1),
            # wrk's CPU seconds per wall second over the machine's cores.
            "wrk_share_of_machine": round(m.wrk_cpu_us * m.result.rps / 1e6 / cpus, 3),
            "rounds_rps": [round(r.result.rps) for r in rounds[name]],
            "median_p99_ms": statistics.median(r.result.p99_us for r in rounds[name]) / 1000,
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
