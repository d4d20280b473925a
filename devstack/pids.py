"""The stack's processes by PID: which are alive, and stopping one (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from devstack.paths import Paths, say


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(paths: Paths, service: str) -> int | None:
    """The PID of ``service`` when it runs (PostgreSQL's from its postmaster.pid), else ``None``."""
    pid_file = paths.pg_data / "postmaster.pid" if service == "postgres" else paths.pid_file(service)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid: int, name: str, timeout_s: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    say(f"{name} (pid {pid}) ignored SIGTERM for {timeout_s:.0f}s; sending SIGKILL")
    os.kill(pid, signal.SIGKILL)
