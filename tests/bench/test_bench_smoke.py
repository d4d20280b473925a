"""Every benchmark runs once in a smoke mode (tiny sizes, ``--benchmark-disable``) so the bench code cannot
rot between the runs of ``make bench``; and ``python -m bench.run`` end to end on real pytest-benchmark
output: a first run saves the machine's baseline, a second passes, a slowed benchmark fails with exit 1."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fresh import child_env

ROOT = Path(__file__).resolve().parents[2]
TINY = {"ADP_BENCH_SIZES": "500", "ADP_BENCH_INGEST_COUNT": "300", "ADP_BENCH_INGEST_ROUNDS": "1"}
HARNESSES = (
    "bench.http",
    "bench.granian_tuning",
    "bench.feedback_http",
    "bench.minimal_durable",
    "bench.debit_redis",
    "bench.archive_lag",
    "bench.pg_sinks",
    "bench.run",
)


def _pytest_bench(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", path, "-p", "no:cacheprovider", "-q", *args]
    env = child_env(**TINY)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _bench_run(baseline_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "bench.run", "--skip-http", "-k", "test_index_bench and not eligible",
        "--benchmark-max-time=0.02", "--benchmark-min-rounds=2", *args,
    ]  # fmt: skip
    # Its result files beside the baseline, in the test's own directory, never in bench/results/.
    env = child_env(
        **TINY, ADP_BENCH_BASELINE_DIR=str(baseline_dir), ADP_BENCH_RESULTS_DIR=str(baseline_dir / "results")
    )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_index_benchmarks_run_once() -> None:
    result = _pytest_bench("bench/test_index_bench.py", "--benchmark-disable")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.kafka
def test_ingest_benchmark_runs_once() -> None:
    result = _pytest_bench("bench/test_ingest_bench.py", "--benchmark-disable")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", HARNESSES)
def test_harnesses_import(module: str) -> None:
    """The wrk/Spark harnesses need minutes and the stack; their code is at least importable (mypy checks
    the rest)."""
    importlib.import_module(module)


@pytest.mark.postgres
@pytest.mark.redis
def test_bench_run_saves_a_baseline_passes_again_and_fails_on_a_slowed_benchmark(tmp_path: Path) -> None:
    """``bench.run`` opens a sandbox of its own (a database and a Redis database) before any suite runs."""
    first = _bench_run(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "first run on this machine" in first.stdout
    (baseline,) = tmp_path.glob("*.json")

    # A generous threshold: this checks the path, not the machine's noise.
    second = _bench_run(tmp_path, "--threshold", "20")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "vs baseline" in second.stdout

    # The same benchmarks against a baseline 100 times faster: every one of them is "slowed".
    data = json.loads(baseline.read_text())
    for bench in data["benchmarks"]:
        bench["stats"]["median"] /= 100
    baseline.write_text(json.dumps(data))
    slowed = _bench_run(tmp_path, "--threshold", "20")
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert "REGRESSION" in slowed.stdout
    assert "test_lookup_and_auction[500]" in slowed.stdout.rpartition("REGRESSION")[2]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.single_node(
    reason="opens the bench's sandbox in the test session's process: on a cluster that is a second key "
    "namespace, which a process cannot have (the bench, its own process, gets its own)"
)
def test_the_feedback_bench_runs_in_stores_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench.feedback_http`` seeds a campaign and debits it: in a database and a Redis database of its
    own, which its servers inherit, never the user's; the environment is the user's again after it."""
    from adplatform.config import load_config
    from bench import feedback_http

    user = load_config()
    seen: list[tuple[str, str]] = []

    def run(args: object) -> int:
        config = load_config()
        seen.append((config.pg_dsn, config.redis_url))
        return 0

    monkeypatch.setattr(feedback_http, "_run", run)
    assert feedback_http.main(["--rounds", "1"]) == 0
    ((pg_dsn, redis_url),) = seen
    assert pg_dsn != user.pg_dsn and redis_url != user.redis_url
    assert (load_config().pg_dsn, load_config().redis_url) == (user.pg_dsn, user.redis_url)
