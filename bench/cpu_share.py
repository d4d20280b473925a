"""Where a bench run's CPU went: the server under test (its process and workers), Redis, Kafka, the load
generator and the whole machine (Linux only), measured with the demo's ``loadtest.cpu.CpuMeter``.

A feedback request waits for two acknowledged round trips (Redis, Kafka), so at a fixed number of
connections its rate is the connections over the latency, and the machine need not be full: these shares
tell a bench that is short of CPU from one that waits.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from loadtest.cpu import CpuMeter

_PROC = Path("/proc")
_T = TypeVar("_T")


def _cmdline(pid: str) -> str:
    try:
        return (_PROC / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuShare:
    """CPU seconds over one measured window, by process group."""

    wall_s: float
    server_s: float
    redis_s: float
    kafka_s: float
    #: The load generator (wrk): the CPU of this process's children that ended within the window.
    load_s: float
    machine_s: float

    def line(self) -> str:
        cores = os.cpu_count() or 1
        return (
            f"CPU over {self.wall_s:.1f} s ({cores} cores, {self.wall_s * cores:.1f} CPU-s): server "
            f"{self.server_s:.1f}, redis {self.redis_s:.1f}, kafka {self.kafka_s:.1f}, "
            f"wrk {self.load_s:.1f}, machine {self.machine_s:.1f}"
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in vars(self).items()}


def _group(cmdline: str) -> str | None:
    if cmdline.startswith("redis-server"):
        return "redis"
    if cmdline.startswith("java") and "kafka.Kafka" in cmdline:
        return "kafka"
    return None


def measure_cpu(server_pid: int, run: Callable[[], _T], clock: Callable[[], float]) -> tuple[_T, CpuShare]:
    """``run()`` (a wrk run, a child of this process) and the CPU each group spent meanwhile. The server's
    process tree is read at the start (its workers are up by then); Redis and Kafka are every
    ``redis-server`` and Kafka broker on the machine (the local stack: other users of them count too)."""
    roots = {"server": server_pid}
    for pid in filter(str.isdigit, os.listdir(_PROC)):
        group = _group(_cmdline(pid))
        if group is not None:
            roots[f"{group} {pid}"] = int(pid)
    meter = CpuMeter(roots)
    children = _children_cpu_s()
    meter.sample(clock())
    result = run()
    meter.sample(clock(), full=False)  # the processes seen at the start; one gone meanwhile keeps its CPU
    load_s = _children_cpu_s() - children
    table = meter.table()
    # Every row is a root ("server", "redis 123") or a descendant ("server › python3"): its group comes first.
    spent = {"server": 0.0, "redis": 0.0, "kafka": 0.0}
    for row in table.rows:
        spent[row.label.split(" ", 1)[0]] += row.cpu_s
    machine_s = table.machine_share * table.wall_s
    return result, CpuShare(table.wall_s, spent["server"], spent["redis"], spent["kafka"], load_s, machine_s)
