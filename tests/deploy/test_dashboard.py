"""deploy/prometheus.yml scrapes every service on its port; deploy/grafana-dashboard.json only asks for
metric names the code registers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import REGISTRY

from adplatform.config import DEFAULT_METRICS_PORTS, load_config
from adplatform.metrics import RestartCollector
from adplatform.services import ADSERVER_PORT
from adserver.feedback import FeedbackCounters
from adserver.http.health import feedback_families, flush
from adserver.http.metrics import MULTIPROC_ENV
from adserver.lifespan import build_state
from adserver.state import StateRef

ROOT = Path(__file__).resolve().parents[2]
#: Every metric of ours starts with one of these (PromQL functions and labels do not).
PREFIXES = (
    "adserver_",
    "adplatform_",
    "manager_",
    "ledger_",
    "pacer_",
    "reconciler_",
    "archive_",
    "served_writer_",
)


#: The series a family of each type exposes, also before it has samples (a labelled metric's first child).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _sample_names(families: Any) -> set[str]:
    listed = list(families)
    names = {s.name for f in listed for s in f.samples}
    return names | {f.name + suffix for f in listed for suffix in SUFFIXES.get(f.type, ("",))}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every series name the services and an ad-server worker (with feedback) expose."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    names = _sample_names(REGISTRY.collect())
    names |= _sample_names(RestartCollector(lambda: {"manager": 1}).collect())
    ref = StateRef()
    ref.state = build_state(load_config({}, dotenv=Path("/nonexistent")))
    ref.metrics.observe("/ad/user/{user_id}/serve", 200, 0.001)
    flush(ref)
    feedback_families(ref.metrics.exporter, FeedbackCounters())
    text = ref.metrics.exporter.render().decode()
    names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    return names


def _exprs() -> list[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_dashboard_expression_names_registered_metrics(registered: set[str]) -> None:
    exprs = _exprs()
    assert len(exprs) >= 9
    for expr in exprs:
        used = {m for m in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if m.startswith(PREFIXES)}
        assert used, expr
        assert used <= registered, (expr, used - registered)


def test_dashboard_has_the_panels() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for word in (
        "requests/s",
        "fill",
        "p99",
        "feedback",
        "spend",
        "consumer lag",
        "dlq",
        "archive",
        "restarts",
    ):
        assert word in titles, word
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    expected = {name: [f"127.0.0.1:{port}"] for name, port in DEFAULT_METRICS_PORTS.items()}
    expected["adserver"] = [f"127.0.0.1:{ADSERVER_PORT}"]
    assert jobs == expected
