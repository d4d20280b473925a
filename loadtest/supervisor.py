"""Background platform processes for the demo, benchmarks and fault scenarios: start, stop by PID.

Each process gets a PID file and a log under the stack directory, so ``stop_all`` (and ``make demo-down``)
stops exactly what was started here, by PID, and nothing else: each PID file records the process's start
time and boot id, checked against /proc before any signal (``adplatform.pidfile``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adplatform.pidfile import read_pid_file, signal_if_same, why_stale, write_pid_file


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Supervisor:
    """Starts ``adplatform`` subcommands in the background and stops them by PID."""

    def __init__(self, stack_dir: Path, *, env: dict[str, str] | None = None, tag: str = "demo") -> None:
        self.run_dir = stack_dir / "run" / tag
        self.log_dir = stack_dir / "logs" / tag
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, **(env or {}))
        self.procs: dict[str, Managed] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Managed:
        """Start ``adplatform *args`` as ``name``; ``env`` adds variables for this process only."""
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "adplatform.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})},
                start_new_session=True,
            )
        write_pid_file(self.run_dir / f"{name}.pid", proc.pid)
        managed = Managed(name, proc, log)
        self.procs[name] = managed
        return managed

    def alive(self, name: str) -> bool:
        managed = self.procs.get(name)
        return managed is not None and managed.proc.poll() is None

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        """Signal the process (SIGTERM: it stops its own children, e.g. Spark's JVM, cleanly), wait, then
        SIGKILL its whole process group; returns the exit code."""
        managed = self.procs.pop(name, None)
        if managed is None:
            return None
        proc = managed.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)  # a crash takes the children with it
                else:
                    os.kill(proc.pid, sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Children still alive after their parent (an orphaned JVM) go with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        return proc.returncode

    def kill(self, name: str) -> None:
        """SIGKILL (fault injection): no chance to clean up."""
        self.stop(name, sig=signal.SIGKILL, timeout_s=10)

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)

    @staticmethod
    def stop_recorded(
        run_dir: Path, *, timeout_s: float = 30.0, report: Callable[[str], None] = print
    ) -> list[str]:
        """Stop every process whose PID file is in ``run_dir`` (what an earlier run left behind), each
        given ``timeout_s`` after SIGTERM, once /proc confirms it is still that process; a stale file is
        reported, removed and nothing signalled."""
        stopped: list[str] = []
        for pid_file in sorted(run_dir.glob("*.pid")):
            record = read_pid_file(pid_file)
            reason = "unreadable" if record is None else why_stale(record, _is_ours)
            if record is None or reason is not None:
                pid_file.unlink(missing_ok=True)
                report(f"stale PID file {pid_file}: {reason}; removed, nothing signalled")
                continue
            # The process stops its own children cleanly; wait while it is still the recorded one.
            if signal_if_same(record, signal.SIGTERM, _is_ours):
                for _ in range(int(timeout_s * 10)):
                    if why_stale(record, _is_ours) is not None:
                        break
                    time.sleep(0.1)
            # Whatever of its group is left: the group id stays taken while any member lives, so it cannot
            # be another process's group yet. A leader still alive after ``timeout_s`` goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
            pid_file.unlink(missing_ok=True)
            stopped.append(pid_file.stem)
        return stopped


def _is_ours(argv: Sequence[str]) -> bool:
    """A bare-number PID file (an older adplatform's) names one of ours: ``python -m adplatform.cli …``."""
    return "-m" in argv and "adplatform.cli" in argv
