"""Where the machine went: CPU time of named process trees over a run, read from ``/proc``.

``CpuMeter`` samples ``/proc/<pid>/stat`` (utime + stime) of every process under its roots (the demo's
``adplatform run`` and each service it started, with their children: uvicorn's workers, Spark's JVM; the
stack's Kafka, Redis and PostgreSQL; the demo itself, i.e. the simulator) and ``/proc/stat`` for the whole
machine. It is sampled at the start, now and then during the run (the demo: every 5 s, re-reading only the
processes already seen, so a process that ends mid-run keeps the CPU it used until then) and at the end;
``table`` turns the samples into rows, each a share of the run's wall time (100% = one core busy for the
whole run). Linux only; no psutil (not a dependency).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

#: Clock ticks per second of utime/stime and /proc/stat (100 on every Linux we run on).
TICKS_PER_S: float = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


class StatFields(NamedTuple):
    """What we read of one ``/proc/<pid>/stat`` line."""

    comm: str
    ppid: int
    cpu_ticks: int  # utime + stime: this process's own CPU, not its reaped children's
    start_ticks: int  # start time since boot: with the pid, names the process across pid reuse


class ProcKey(NamedTuple):
    pid: int
    start_ticks: int


@dataclass(frozen=True)
class CpuRow:
    """One row of the table: a process and its CPU over the run."""

    label: str
    pid: int
    cpu_s: float
    #: ``cpu_s`` / the run's wall time: 1.0 is one core busy for the whole run.
    share: float


@dataclass(frozen=True)
class CpuTable:
    """The rows, largest first, and the machine's figures over the same wall time."""

    wall_s: float
    cpus: int
    rows: tuple[CpuRow, ...]
    #: Every process's CPU on the machine (``/proc/stat``), as a share of one core; ``cpus`` is the most.
    machine_share: float

    @property
    def measured_share(self) -> float:
        return sum(r.share for r in self.rows)

    @property
    def other_share(self) -> float:
        """What the machine spent outside the measured processes (other users, the kernel, short-lived
        processes that came and went between samples)."""
        return max(0.0, self.machine_share - self.measured_share)


def parse_stat(text: str) -> StatFields:
    """Fields of a ``/proc/<pid>/stat`` line. ``comm`` may hold spaces and parentheses: it ends at the last
    ``)``; the fields after it are numbered from 3 (state) in proc(5)."""
    open_at, close_at = text.index("("), text.rindex(")")
    rest = text[close_at + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15
    return StatFields(text[open_at + 1 : close_at], int(rest[1]), utime + stime, int(rest[19]))


def parse_machine(text: str) -> tuple[int, int]:
    """``(busy ticks, cpus)`` from ``/proc/stat``: the ``cpu`` line minus idle and iowait (guest time is
    already inside user time), and how many ``cpuN`` lines there are."""
    busy, cpus = 0, 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            busy = sum(values[:8]) - values[3] - values[4]  # user..steal, without idle and iowait
        elif line.startswith("cpu"):
            cpus += 1
    return busy, max(cpus, 1)


#: Names a process first seen under a measured root: (its parent's label, its comm, its argv) → label.
Namer = Callable[[str, str, tuple[str, ...]], str]


def child_label(parent: str, comm: str, argv: tuple[str, ...]) -> str:
    """The default name of a descendant: its parent's label and its own command name."""
    return f"{parent} › {comm}"


def platform_label(parent: str, comm: str, argv: tuple[str, ...]) -> str:
    """Names the processes under ``adplatform run``: a service by its name (``python -m adplatform.cli serve
    …`` is ``adserver``), a worker of the ad server as such, Spark's JVM as ``… › JVM``."""
    if "adplatform.cli" in argv:
        from adplatform.services import PLATFORM_SERVICES

        at = argv.index("adplatform.cli") + 1
        command = argv[at] if at < len(argv) else ""
        for svc in PLATFORM_SERVICES:
            if svc.argv[0] == command:
                return svc.name
        return command or parent
    if "--multiprocessing-fork" in argv and "spawn_main" in " ".join(argv):
        return f"{parent} › worker"
    if comm == "java":
        return f"{parent} › JVM"
    return child_label(parent, comm, argv)


@dataclass
class _Seen:
    label: str
    first_ticks: int
    last_ticks: int


@dataclass
class CpuMeter:
    """Samples the CPU of the process trees under ``roots`` (label → pid) and of the machine.

    A root keeps its label; a descendant is named by ``namer`` when first seen. A process first seen after
    the first sample started during the run: all its CPU counts (from 0).
    """

    roots: Mapping[str, int]
    proc: Path = Path("/proc")
    namer: Namer = child_label
    _seen: dict[ProcKey, _Seen] = field(default_factory=dict, init=False)
    _sampled: bool = field(default=False, init=False)
    _machine: list[tuple[float, int]] = field(default_factory=list, init=False)
    _cpus: int = field(default=1, init=False)

    def sample(self, now_s: float, *, full: bool = True) -> None:
        """Read every process under the roots, and the machine's busy time, at ``now_s`` (monotonic).
        ``full=False`` re-reads only the processes already seen (a few dozen reads instead of every
        process on the machine: cheap enough to run beside a load without disturbing it); processes
        that started since are found by the next full sample."""
        if not full and self._sampled:
            self._refresh()
            self._sample_machine(now_s)
            return
        stats = self._read_all()
        children: dict[int, list[int]] = {}
        for pid, st in stats.items():
            children.setdefault(st.ppid, []).append(pid)
        todo = [(pid, label) for label, pid in self.roots.items() if pid in stats]
        # A root under another root (``adplatform run`` is the demo's child) keeps its own label.
        rooted = set(self.roots.values())
        while todo:
            pid, label = todo.pop()
            st = stats[pid]
            key = ProcKey(pid, st.start_ticks)
            seen = self._seen.get(key)
            if seen is None:
                # Seen at the first sample: counted from there; later: it started during the run.
                seen = _Seen(label, st.cpu_ticks if not self._sampled else 0, st.cpu_ticks)
                self._seen[key] = seen
            seen.last_ticks = st.cpu_ticks
            for child in children.get(pid, ()):
                if child in rooted:
                    continue
                known = self._seen.get(ProcKey(child, stats[child].start_ticks))
                name = known.label if known else self.namer(seen.label, stats[child].comm, self._argv(child))
                todo.append((child, name))
        self._sampled = True
        self._sample_machine(now_s)

    def _sample_machine(self, now_s: float) -> None:
        machine = self._read_text("stat")
        if machine is not None:
            busy, self._cpus = parse_machine(machine)
            self._machine.append((now_s, busy))

    def _refresh(self) -> None:
        for key, seen in self._seen.items():
            text = self._read_text(f"{key.pid}/stat")
            if text is None:
                continue
            try:
                st = parse_stat(text)
            except (ValueError, IndexError):
                continue
            if st.start_ticks == key.start_ticks:  # still that process, not a reuse of its pid
                seen.last_ticks = st.cpu_ticks

    def table(self) -> CpuTable:
        """One row per process since the first sample, largest first."""
        wall_s = self._machine[-1][0] - self._machine[0][0] if len(self._machine) > 1 else 0.0
        rows = [
            _row(seen.label, key.pid, seen.last_ticks - seen.first_ticks, wall_s)
            for key, seen in self._seen.items()
        ]
        rows.sort(key=lambda r: (-r.cpu_s, r.label, r.pid))
        machine_ticks = self._machine[-1][1] - self._machine[0][1] if len(self._machine) > 1 else 0
        machine_share = machine_ticks / TICKS_PER_S / wall_s if wall_s > 0 else 0.0
        return CpuTable(wall_s, self._cpus, tuple(rows), machine_share)

    def _read_all(self) -> dict[int, StatFields]:
        stats: dict[int, StatFields] = {}
        try:
            entries = [e.name for e in self.proc.iterdir() if e.name.isdigit()]
        except OSError:
            return stats
        for name in entries:
            text = self._read_text(f"{name}/stat")
            if text is None:  # it ended between the listing and the read
                continue
            try:
                stats[int(name)] = parse_stat(text)
            except (ValueError, IndexError):
                continue
        return stats

    def _argv(self, pid: int) -> tuple[str, ...]:
        raw = self._read_text(f"{pid}/cmdline")
        return tuple(a for a in (raw or "").split("\0") if a)

    def _read_text(self, relative: str) -> str | None:
        try:
            return (self.proc / relative).read_text()
        except OSError:
            return None


def _row(label: str, pid: int, ticks: int, wall_s: float) -> CpuRow:
    cpu_s = ticks / TICKS_PER_S
    return CpuRow(label, pid, cpu_s, cpu_s / wall_s if wall_s > 0 else 0.0)


def format_table(table: CpuTable, *, top: int = 20) -> str:
    """The table as text: one row a process, the machine's total and what the rows do not explain."""
    lines = [
        f"CPU over the run ({table.wall_s:.0f} s wall, {table.cpus} cores; 100% = one core all along)",
        f"  {'process':<40} {'pid':>8} {'cpu s':>8} {'share':>7}",
    ]
    for row in table.rows[:top]:
        lines.append(f"  {row.label:<40} {row.pid:>8} {row.cpu_s:>8.1f} {row.share:>7.1%}")
    rest = table.rows[top:]
    if rest:
        cpu_s = sum(r.cpu_s for r in rest)
        lines.append(
            f"  {f'({len(rest)} more)':<40} {'':>8} {cpu_s:>8.1f} {sum(r.share for r in rest):>7.1%}"
        )
    lines.append(f"  {'all of the above':<40} {'':>8} {'':>8} {table.measured_share:>7.1%}")
    lines.append(f"  {'everything else on the machine':<40} {'':>8} {'':>8} {table.other_share:>7.1%}")
    lines.append(
        f"  {'machine busy':<40} {'':>8} {'':>8} {table.machine_share:>7.1%}  of {table.cpus * 100}%"
    )
    return "\n".join(lines)
