"""Debian's Prometheus for the local stack (``adplatform stack up --with-prometheus``), on a private port.

It scrapes what ``deploy/prometheus.yml`` lists (every service's ``/metrics``), with the targets rewritten
to the ports this configuration uses (``ADP_METRICS_PORT_<SERVICE>``, the ad server's serving port), and
keeps its data under ``.stack/prometheus/`` for two days. Installed with apt-get when missing (Debian or
Ubuntu as root, like the rest of the stack); started in its own session so it outlives the CLI; stopped
by ``stack down`` through its PID record (start time and boot id checked first, as for Kafka).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from adplatform.config import Config
from adplatform.pidfile import PidRecord, read_pid_file, signal_if_same, why_stale, write_pid_file
from devstack.install import _apt_install, _is_debian_root
from devstack.paths import Paths, StackError, say

PROMETHEUS_PORT: Final = 19090
#: The ad server's default serving port (``adplatform serve``; ``adplatform.services.ADSERVER_PORT``).
ADSERVER_PORT: Final = 8000
TEMPLATE: Final = Path(__file__).resolve().parent.parent / "deploy" / "prometheus.yml"
RETENTION: Final = "2d"


def _is_prometheus(argv: Sequence[str]) -> bool:
    return bool(argv) and Path(argv[0]).name == "prometheus"


def scrape_config(
    template: str, metrics_ports: Mapping[str, int], *, adserver_port: int = ADSERVER_PORT
) -> str:
    """``deploy/prometheus.yml`` with each job's target at the configured port; a service whose port is 0
    (metrics off) is not scraped."""
    data: dict[str, Any] = yaml.safe_load(template)
    jobs = []
    for job in data["scrape_configs"]:
        name = job["job_name"]
        port = adserver_port if name == "adserver" else metrics_ports.get(name, 0)
        if port:
            jobs.append({**job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
    return yaml.safe_dump({**data, "scrape_configs": jobs}, sort_keys=False)


def ensure_prometheus() -> str:
    """The ``prometheus`` binary, installed with apt-get when missing (Debian/Ubuntu as root)."""
    found = shutil.which("prometheus")
    if found is None and _is_debian_root():
        _apt_install(["prometheus"])
        found = shutil.which("prometheus")
    if found is None:
        raise StackError("prometheus is not installed: apt-get install prometheus (or your package manager)")
    return found


def running(paths: Paths) -> PidRecord | None:
    """The PID record of the stack's Prometheus while that process runs."""
    record = read_pid_file(paths.pid_file("prometheus"))
    if record is None or why_stale(record, _is_prometheus) is not None:
        return None
    return record


def ready(port: int) -> bool:
    """Whether a Prometheus on ``port`` answers ``/-/ready``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(
    paths: Paths,
    config: Config,
    *,
    port: int = PROMETHEUS_PORT,
    adserver_port: int = ADSERVER_PORT,
    timeout_s: float = 60.0,
) -> str:
    """Start (or keep) the stack's Prometheus; returns its URL once it answers ready."""
    url = f"http://127.0.0.1:{port}"
    if running(paths) is not None:
        return url
    binary = ensure_prometheus()
    folder = paths.root / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.run.mkdir(parents=True, exist_ok=True)
    config_file = folder / "prometheus.yml"
    config_file.write_text(
        scrape_config(TEMPLATE.read_text(), config.metrics_ports, adserver_port=adserver_port)
    )
    cmd = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (paths.logs / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    write_pid_file(paths.pid_file("prometheus"), proc.pid)
    deadline = time.monotonic() + timeout_s
    while not ready(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_prometheus(paths)
            raise StackError(f"Prometheus did not start on :{port}; see {paths.logs / 'prometheus.log'}")
        time.sleep(0.2)
    say(f"prometheus {url} (scraping {config_file})")
    return url


def stop_prometheus(paths: Paths, timeout_s: float = 30.0) -> bool:
    """Stop the stack's Prometheus by its PID record; False when none was running."""
    record = running(paths)
    pid_file = paths.pid_file("prometheus")
    if record is None:
        pid_file.unlink(missing_ok=True)
        return False
    signal_if_same(record, signal.SIGTERM, _is_prometheus)
    deadline = time.monotonic() + timeout_s
    while why_stale(record, _is_prometheus) is None:
        # Started by this process (a test): reap it, or it stays a zombie that looks alive in /proc.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)
        if time.monotonic() > deadline:
            signal_if_same(record, signal.SIGKILL, _is_prometheus)
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True
