"""Spark standalone from the pyspark installation: a master and 2 workers (1 core, 1 GiB each), on private
ports. Jobs run on it unchanged with ``spark-submit --master spark://127.0.0.1:17077``."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from adplatform.pidfile import write_pid_file
from devstack.ports import ensure_free

SPARK_MASTER_PORT: Final = 17077
SPARK_MASTER_UI_PORT: Final = 17080
#: Web UI ports of workers 1 and 2 (a worker's own RPC port is picked by Spark).
SPARK_WORKER_UI_PORTS: Final = (17081, 17082)
MASTER_CLASS: Final = "org.apache.spark.deploy.master.Master"
WORKER_CLASS: Final = "org.apache.spark.deploy.worker.Worker"


def master_url() -> str:
    return f"spark://127.0.0.1:{SPARK_MASTER_PORT}"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _env() -> dict[str, str]:
    # Small daemons: the master and workers only schedule; executors get the worker's memory.
    return {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}  # fmt: skip


def pid_file(root: Path, name: str) -> Path:
    return root / "run" / f"{name}.pid"


def spark_cmdline(root: Path, name: str) -> Callable[[Sequence[str]], bool]:
    """The master's or a worker's JVM (``spark-class`` execs it): its main class and, for a worker, its
    work dir."""
    if name == "spark-master":
        return lambda argv: MASTER_CLASS in argv and f"{SPARK_MASTER_PORT}" in argv
    work = str(root / name)
    return lambda argv: WORKER_CLASS in argv and work in argv


def _start(root: Path, name: str, args: list[str], logs: Path) -> None:
    cmd = [str(spark_home() / "bin" / "spark-class"), *args]
    with (logs / f"{name}.out").open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(),
            start_new_session=True,
        )  # fmt: skip
    write_pid_file(pid_file(root, name), proc.pid)


def start_master(root: Path, logs: Path) -> None:
    ensure_free(SPARK_MASTER_PORT, "the Spark master")  # (a taken UI port, Spark moves to the next one)
    args = [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(SPARK_MASTER_PORT),
            "--webui-port", str(SPARK_MASTER_UI_PORT)]  # fmt: skip
    _start(root, "spark-master", args, logs)


def start_worker(root: Path, n: int, logs: Path) -> None:
    name = f"spark-worker-{n}"
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    args = [WORKER_CLASS, master_url(), "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
            "--webui-port", str(SPARK_WORKER_UI_PORTS[n - 1]), "--work-dir", str(work)]  # fmt: skip
    _start(root, name, args, logs)


def alive_workers() -> int | None:
    """Workers the master counts alive (its web UI's JSON), or None when the master does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{SPARK_MASTER_UI_PORT}/json/", timeout=2) as resp:
            return int(json.loads(resp.read()).get("aliveworkers", 0))
    except (OSError, urllib.error.URLError, ValueError):
        return None
