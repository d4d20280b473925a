"""Background platform processes for the demo, benchmarks and fault scenarios: start, stop by PID.

Each process gets a PID file and a log under the stack directory, so ``stop_all`` (and ``make demo-down``)
stops exactly what was started here, by PID, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


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
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
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
    def stop_recorded(run_dir: Path, *, timeout_s: float = 30.0) -> list[str]:
        """Stop every process whose PID file is in ``run_dir`` (what an earlier run left behind), each
        given ``timeout_s`` after SIGTERM."""
        stopped: list[str] = []
        for pid_file in sorted(run_dir.glob("*.pid")):
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                pid_file.unlink()
                continue
            try:
                os.kill(pid, signal.SIGTERM)  # the process stops its own children cleanly
                for _ in range(int(timeout_s * 10)):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # whatever of its group is left
            pid_file.unlink(missing_ok=True)
            stopped.append(pid_file.stem)
        return stopped
