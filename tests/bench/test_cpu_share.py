"""``bench.cpu_share`` finds a server's process tree and reads each group's CPU around a run (no stack;
what the CPU figures are is not asserted, only that they are read)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu_share import CpuShare, _stat, _tree, measure_cpu


def test_tree_is_the_root_and_its_descendants() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 1, 14: 13}
    assert _tree(10, parents) == {10, 11, 12}
    assert _tree(13, parents) == {13, 14}


def test_stat_reads_this_process_and_not_a_gone_one() -> None:
    found = _stat(os.getpid())
    assert found is not None and found[0] == os.getppid()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _stat(child.pid) is None


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
