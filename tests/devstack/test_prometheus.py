"""The stack's optional Prometheus (``stack up --with-prometheus``): its scrape config follows the configured
ports, and the real binary (Debian's, installed when missing) scrapes a service's ``/metrics`` and stops by
its PID record."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server

from adplatform.config import DEFAULT_METRICS_PORTS, Config, load_config
from devstack.paths import Paths
from devstack.prometheus import (
    TEMPLATE,
    ensure_prometheus,
    running,
    scrape_config,
    start_prometheus,
    stop_prometheus,
)
from tests.ports import free_port


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config({"ADP_STACK_DIR": str(tmp_path)}, dotenv=tmp_path / "none")


def test_scrape_config_targets_the_configured_ports_and_skips_those_turned_off() -> None:
    ports = {**DEFAULT_METRICS_PORTS, "ledger": 9203, "pacer": 0}
    data = yaml.safe_load(scrape_config(TEMPLATE.read_text(), ports, adserver_port=8010))
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in data["scrape_configs"]}
    assert jobs["ledger"] == ["127.0.0.1:9203"] and jobs["adserver"] == ["127.0.0.1:8010"]
    assert "pacer" not in jobs
    assert jobs["manager"] == [f"127.0.0.1:{DEFAULT_METRICS_PORTS['manager']}"]
    assert data["global"] == yaml.safe_load(TEMPLATE.read_text())["global"]


@pytest.fixture
def manager_metrics() -> Iterator[tuple[int, Counter]]:
    """A stand-in for the manager's metrics port, with a counter of its own registry."""
    registry = CollectorRegistry()
    counter = Counter("prom_test_events", "Events seen by the Prometheus test", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port, counter
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_a_service_and_stops_by_its_pid(
    config: Config, tmp_path: Path, manager_metrics: tuple[int, Counter]
) -> None:
    ensure_prometheus()
    metrics_port, counter = manager_metrics
    counter.inc(7)
    ports = dict.fromkeys(DEFAULT_METRICS_PORTS, 0) | {"manager": metrics_port}
    paths, prom_port = Paths(tmp_path), free_port()
    url = start_prometheus(paths, replace(config, metrics_ports=ports), port=prom_port, adserver_port=0)
    try:
        assert url == f"http://127.0.0.1:{prom_port}"
        jobs = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
        assert [j["job_name"] for j in jobs] == ["manager"]
        deadline = time.monotonic() + 30  # the template scrapes every 5 s
        while not _query(prom_port, 'prom_test_events_total{job="manager"}'):
            assert time.monotonic() < deadline, "never scraped"
            time.sleep(0.5)
        (sample,) = _query(prom_port, 'prom_test_events_total{job="manager"}')
        assert sample["value"][1] == "7"  # type: ignore[index]  # [timestamp, "value"] from the API
        assert running(paths) is not None
        assert start_prometheus(paths, config, port=prom_port) == url  # already running: kept
    finally:
        assert stop_prometheus(paths)
    assert running(paths) is None and not paths.pid_file("prometheus").exists()
    assert not stop_prometheus(paths)
