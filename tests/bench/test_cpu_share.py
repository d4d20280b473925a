"""``bench.cpu_share`` reads each group's CPU around a run (no stack; what the CPU figures are is not
asserted, only that they are read). The ``/proc`` reading itself is ``loadtest.cpu``'s, tested there."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.cpu_share import CpuShare, measure_cpu


def test_measure_returns_the_run_and_each_group() -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:

        def run() -> str:
            subprocess.run([sys.executable, "-c", "sum(range(10**6))"], check=True)
            return "done"

        result, share = measure_cpu(server.pid, run, time.monotonic)
    finally:
        server.kill()
        server.wait()
    assert result == "done"
    assert isinstance(share, CpuShare)
    assert share.load_s > 0  # the child that ran and ended within the window
    assert min(share.server_s, share.redis_s, share.kafka_s, share.machine_s) >= 0
    assert "server" in share.line() and set(share.as_dict()) >= {"server_s", "load_s", "machine_s"}
