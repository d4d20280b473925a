"""``wrk`` as the HTTP benchmark's load generator: realistic serve URLs in a Lua script, parsed results.

The Lua script walks a fixed list of request paths (seeded: cities with their states, devices, ages,
genders, income buckets, anonymous and known users in the original simulator's proportions) and prints
its summary as one JSON line, so nothing depends on wrk's human-readable output.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlencode

import msgspec

from index.campaign import DEVICE_TYPES, GENDERS, INCOME_BUCKETS
from index.geo import DEFAULT_GEO

ANONYMOUS: Final = "1111-1111-1111-1111"
_MARKER: Final = "WRK_JSON "
_DONE: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
    .. '"non_2xx": %d, "timeouts": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class WrkResult(msgspec.Struct, frozen=True):
    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    connect_errors: int
    read_errors: int
    write_errors: int
    non_2xx: int
    timeouts: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)


def make_paths(count: int, seed: int = 1) -> list[str]:
    """Serve URLs like the original simulator's: every request names device, city and state; most
    name an age, some a gender and an income bucket; one in five is the privacy user."""
    rng = random.Random(seed)
    users = [f"{rng.getrandbits(64):016x}-{n}" for n in range(1000)]
    names, populations = DEFAULT_GEO.city_weights()
    paths: list[str] = []
    for _ in range(count):
        city = DEFAULT_GEO.city(rng.choices(names, populations)[0])
        assert city is not None
        params = {"device_type": rng.choice(DEVICE_TYPES), "city": city.name, "state": city.state}
        if rng.random() < 0.7:
            params["age"] = str(rng.randint(18, 70))
        if rng.random() < 0.6:
            params["gender"] = rng.choice(GENDERS)
        if rng.random() < 0.5:
            params["income_bucket"] = rng.choice(INCOME_BUCKETS)
        user = ANONYMOUS if rng.random() < 0.2 else rng.choice(users)
        paths.append(f"/ad/user/{user}/serve?{urlencode(params)}")
    return paths


def write_script(path: Path, paths: list[str]) -> Path:
    """A wrk Lua script rotating through ``paths`` (each thread from its own offset)."""
    entries = ",\n".join(f'  "{p}"' for p in paths)
    path.write_text(
        f"local paths = {{\n{entries}\n}}\n"
        "local n = #paths\nlocal i = 0\nlocal threads = 0\n"
        "setup = function(thread) threads = threads + 1; thread:set('offset', threads * 997) end\n"
        "init = function(args) i = (offset or 0) % n end\n"
        "request = function()\n  i = i % n + 1\n  return wrk.format('GET', paths[i])\nend\n" + _DONE,
        encoding="utf-8",
    )
    return path


#: How the load generator is scheduled (``--client-policy``). ``other``: as any process (the issue 18
#: figures). ``batch``: ``SCHED_BATCH`` (``chrt --batch 0``), a client that still gets its fair share of
#: the CPU but whose wake-ups never preempt the server: on 2 cores, a co-located wrk woken by each answer
#: preempted each ad-server worker ~14,500 times a second (one request per time slice); a client on
#: another machine never does. Every case of a run, references included, gets the same policy.
ClientPolicy = Literal["other", "batch"]
CLIENT_POLICIES: Final[tuple[ClientPolicy, ...]] = ("other", "batch")


def client_prefix(policy: ClientPolicy) -> list[str]:
    """The command prefix that runs a load generator under ``policy`` (empty for ``other``)."""
    if policy == "other":
        return []
    chrt = shutil.which("chrt")
    if chrt is None:
        raise RuntimeError("chrt not found (util-linux): needed for --client-policy batch")
    return [chrt, "--batch", "0"]


def add_client_policy(parser: argparse.ArgumentParser) -> None:
    """``--client-policy`` (``ClientPolicy``) on a bench's command line."""
    parser.add_argument(
        "--client-policy", choices=CLIENT_POLICIES, default="other",
        help="how wrk is scheduled: other (as any process, the default) or batch (SCHED_BATCH: its "
        "wake-ups do not preempt the server, as a client on another machine; every case alike)",
    )  # fmt: skip


def run_wrk_as(args: argparse.Namespace, url: str, script: Path, *, duration_s: int) -> WrkResult:
    """``run_wrk`` with a bench's command-line settings: ``--connections``, ``--threads`` and
    ``--client-policy`` (``add_client_policy``)."""
    return run_wrk(
        url,
        script,
        duration_s=duration_s,
        connections=args.connections,
        threads=args.threads,
        policy=args.client_policy,
    )


def run_wrk(
    url: str,
    script: Path,
    *,
    duration_s: int,
    connections: int = 64,
    threads: int = 2,
    policy: ClientPolicy = "other",
) -> WrkResult:
    """One bounded wrk run (``duration_s`` plus a timeout margin) against ``url``, scheduled as ``policy``
    says."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    cmd = [*client_prefix(policy), wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    cmd += ["-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    for line in out.splitlines():
        if line.startswith(_MARKER):
            return msgspec.json.decode(line[len(_MARKER) :], type=WrkResult)
    raise RuntimeError(f"no summary in wrk output:\n{out}")
