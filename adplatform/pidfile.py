"""PID files that are checked against ``/proc`` before they are trusted or signalled (Linux).

A PID alone identifies a process only while it lives: after it exits, or after a reboot, the number goes to
another process, and a PID file checked by ``kill(pid, 0)`` alone then points at a stranger. So a PID file
written here records the process's identity: its PID, its start time (``/proc/PID/stat`` field 22, clock
ticks since boot) and the boot id (``/proc/sys/kernel/random/boot_id``), as one JSON line.

The rule, for every PID file the project reads:

* a **record** (this module's format) is trusted when a live, non-zombie process has that PID, the same
  start time and the same boot id; otherwise the file is stale;
* a **bare number** (the files of an older adplatform, and those Redis and PostgreSQL write themselves) is
  trusted only when the live process's command line matches the service expected there (the caller's
  ``matches``); otherwise, and always when the caller expects nothing, it is stale.

A stale file is reported and removed by its owner; nothing is ever signalled through it. Before each signal
the identity is checked again, so a process that exits during a long stop is not mistaken for the next
holder of its PID.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

#: Decides whether a command line (``/proc/PID/cmdline`` split at NULs) is the expected service's.
CmdlineMatch = Callable[[Sequence[str]], bool]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class PidRecord:
    """What a PID file says: the PID, and for a record its start time (clock ticks after boot) and boot id;
    both ``None`` for a bare number."""

    pid: int
    start_ticks: int | None = None
    boot_id: str | None = None


def boot_id() -> str:
    """This boot's id: it changes at every reboot, so a start time from another boot never matches."""
    return _BOOT_ID.read_text().strip()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (``/proc/PID/stat`` field 22), or ``None`` when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may hold spaces: split after its closing one.
    fields = stat.rsplit(") ", 1)[-1].split()
    if len(fields) < 20 or fields[0] == "Z":  # fields[0] is field 3 (state), fields[19] field 22
        return None
    return int(fields[19])


def age_s(pid: int) -> float | None:
    """Seconds since ``pid`` started (``start_ticks`` against ``/proc/uptime``), or ``None`` when it is
    gone."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime_s - ticks / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> tuple[str, ...]:
    """The command line of ``pid`` (empty when it is gone, a kernel thread or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    if not raw:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, those of each of its threads (``/proc/PID/task/*/children``); empty
    when it is gone."""
    try:
        tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda t: t.name != str(pid))
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:  # the main thread's first, in the order the kernel lists them
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def record_of(pid: int) -> PidRecord:
    """The identity of the live process ``pid``; ``ProcessLookupError`` when there is none."""
    ticks = start_ticks(pid)
    if ticks is None:
        raise ProcessLookupError(pid)
    return PidRecord(pid, ticks, boot_id())


def write_pid_file(path: Path, pid: int) -> PidRecord:
    """Record ``pid`` (a live process, e.g. a child just started) with its start time and boot id."""
    record = record_of(pid)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"pid": pid, "start_ticks": record.start_ticks, "boot_id": record.boot_id}))
    tmp.replace(path)  # a reader never sees half a file
    return record


def read_pid_file(path: Path) -> PidRecord | None:
    """What ``path`` holds: a record, a bare number (first word of the first line), or ``None`` when it is
    missing or holds neither."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
            return PidRecord(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
    try:
        return PidRecord(int(text.split()[0]))
    except (ValueError, IndexError):
        return None


def why_stale(record: PidRecord, matches: CmdlineMatch | None = None) -> str | None:
    """``None`` when ``record`` names the process it was written for, else why not (for the report)."""
    ticks = start_ticks(record.pid)
    if ticks is None:
        return f"no process {record.pid} is running"
    if record.start_ticks is not None:
        if record.boot_id != boot_id():
            return f"recorded before a reboot; pid {record.pid} is now another process"
        if record.start_ticks != ticks:
            return f"pid {record.pid} is now another process (started at another time)"
        return None
    if matches is not None and matches(cmdline(record.pid)):
        return None
    return f"a bare PID file, and the command line of pid {record.pid} is not the expected service's"


def signal_if_same(record: PidRecord, sig: int, matches: CmdlineMatch | None = None) -> bool:
    """Send ``sig`` to ``record``'s process if it is still that process; whether it was sent."""
    if why_stale(record, matches) is not None:
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def remove(path: Path) -> None:
    """Remove a stale PID file (another program's, e.g. PostgreSQL's, may not be ours to remove)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        path.unlink()
