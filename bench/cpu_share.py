"""Where a bench run's CPU went: the server under test (its process and workers), Redis, Kafka, the load
generator and the whole machine, read from ``/proc`` before and after (Linux only).

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

_TICKS_S = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_T = TypeVar("_T")


def _stat(pid: int) -> tuple[int, float] | None:
    """``(parent pid, user + system CPU seconds)`` of a process, or ``None`` once it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS_S  # ppid, utime + stime


def _cmdline(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir(_PROC) if p.isdigit()]


def _tree(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and its descendants, given each process's parent."""
    found = {root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def _machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``: every state but idle and iowait)."""
    fields = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS_S


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


def _is_redis(cmdline: str) -> bool:
    return cmdline.startswith("redis-server")


def _is_kafka(cmdline: str) -> bool:
    return cmdline.startswith("java") and "kafka.Kafka" in cmdline


def measure_cpu(server_pid: int, run: Callable[[], _T], clock: Callable[[], float]) -> tuple[_T, CpuShare]:
    """``run()`` (a wrk run, a child of this process) and the CPU each group spent meanwhile. The server's
    process tree is read at the start (its workers are up by then); Redis and Kafka are every
    ``redis-server`` and Kafka broker on the machine (the local stack: other users of them count too)."""
    parents: dict[int, int] = {}
    before: dict[int, float] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            parents[pid], before[pid] = stat
    groups = {
        "server": _tree(server_pid, parents),
        "redis": {pid for pid in parents if _is_redis(_cmdline(pid))},
        "kafka": {pid for pid in parents if _is_kafka(_cmdline(pid))},
    }
    machine, children, started = _machine_cpu_s(), _children_cpu_s(), clock()
    result = run()
    wall_s = clock() - started
    machine_s, load_s = _machine_cpu_s() - machine, _children_cpu_s() - children
    spent: dict[str, float] = {}
    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            stat = _stat(pid)
            if stat is not None:  # a process gone meanwhile is left out (its last seconds are unknown)
                total += stat[1] - before[pid]
        spent[name] = total
    share = CpuShare(wall_s, spent["server"], spent["redis"], spent["kafka"], load_s, machine_s)
    return result, share
