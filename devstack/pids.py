"""The stack's processes by PID: which are running, and stopping one (SIGTERM, then SIGKILL).

A PID file is trusted only after ``/proc`` confirms it (``adplatform.pidfile``): ``kafka.pid`` is a record
with the broker's start time and boot id; ``redis.pid`` and PostgreSQL's ``postmaster.pid`` are bare numbers
written by those servers, trusted only when the process's command line is the stack's Redis
(``redis-server 127.0.0.1:16379``) or the postmaster of the stack's data directory. A stale file (after a
reboot or a crash) is reported and removed (``postmaster.pid`` is left to PostgreSQL, which checks and
replaces its own lock file), and nothing is signalled through it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path

from adplatform.pidfile import CmdlineMatch, PidRecord, read_pid_file, remove, signal_if_same, why_stale
from devstack.paths import REDIS_PORT, Paths, say


def pid_file_of(paths: Paths, service: str) -> Path:
    return paths.pg_data / "postmaster.pid" if service == "postgres" else paths.pid_file(service)


def cmdline_match(paths: Paths, service: str) -> CmdlineMatch:
    """What the command line of ``service``'s process looks like (for bare-number PID files)."""

    def kafka(argv: Sequence[str]) -> bool:
        return "kafka.Kafka" in argv and str(paths.kafka / "server.properties") in argv

    def redis(argv: Sequence[str]) -> bool:
        # Redis rewrites its title to "redis-server host:port".
        return bool(argv) and argv[0].startswith("redis-server") and argv[0].endswith(f":{REDIS_PORT}")

    def postgres(argv: Sequence[str]) -> bool:
        return bool(argv) and Path(argv[0]).name in {"postgres", "postmaster"} and str(paths.pg_data) in argv

    return {"kafka": kafka, "redis": redis, "postgres": postgres}[service]


def running(paths: Paths, service: str) -> PidRecord | None:
    """The verified PID record of ``service`` when it runs, else ``None`` (a stale file is reported and,
    unless it is PostgreSQL's own, removed)."""
    pid_file = pid_file_of(paths, service)
    record = read_pid_file(pid_file)
    if record is None:
        return None
    reason = why_stale(record, cmdline_match(paths, service))
    if reason is None:
        return record
    if service == "postgres":
        say(f"stale PID file {pid_file}: {reason}; left to PostgreSQL, which replaces it at start")
    else:
        remove(pid_file)
        say(f"stale PID file {pid_file}: {reason}; removed, nothing signalled")
    return None


def read_pid(paths: Paths, service: str) -> int | None:
    """The PID of ``service`` when it runs (verified against /proc), else ``None``."""
    record = running(paths, service)
    return None if record is None else record.pid


def stop_pid(paths: Paths, record: PidRecord, service: str, timeout_s: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL: each signal only while the PID is still the recorded process."""
    match = cmdline_match(paths, service)
    if not signal_if_same(record, signal.SIGTERM, match):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if why_stale(record, match) is not None:
            return
        time.sleep(0.1)
    say(f"{service} (pid {record.pid}) ignored SIGTERM for {timeout_s:.0f}s; sending SIGKILL")
    signal_if_same(record, signal.SIGKILL, match)
