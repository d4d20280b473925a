"""The regression check of ``make bench`` on synthetic pytest-benchmark documents (the JSON shape
``--benchmark-json`` writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import compare
from bench.run import check_regressions

MACHINE: dict[str, Any] = {
    "node": "box", "machine": "x86_64", "system": "Linux", "python_implementation": "CPython",
    "python_version": "3.11.7", "cpu": {"brand_raw": "AMD EPYC", "count": 2},
}  # fmt: skip


def _bench(name: str, median_s: float, reference_s: float | None = None) -> dict[str, Any]:
    extra = {} if reference_s is None else {"reference_s": reference_s, "ratio_to_reference": 0.3}
    return {
        "group": None, "name": name, "fullname": f"bench/test_x_bench.py::{name}", "params": None,
        "extra_info": extra, "options": {"min_rounds": 5},
        "stats": {"min": median_s * 0.9, "max": median_s * 1.2, "mean": median_s, "median": median_s,
                  "rounds": 5, "iterations": 1},
    }  # fmt: skip


def _run(*benches: dict[str, Any], machine: dict[str, Any] = MACHINE) -> dict[str, Any]:
    return {"machine_info": machine, "commit_info": {}, "benchmarks": list(benches), "datetime": "now"}


def test_same_figures_do_not_regress() -> None:
    run = _run(_bench("a", 1.0), _bench("b", 2.0, 0.5))
    result = compare.compare(run, run)
    assert [v.slowdown for v in result.verdicts] == [1.0, 1.0] and not result.regressions


def test_a_median_slower_than_the_threshold_regresses_and_is_named() -> None:
    baseline = _run(_bench("a", 1.0), _bench("b", 1.0))
    result = compare.compare(_run(_bench("a", 1.3), _bench("b", 1.2)), baseline, threshold=0.25)
    assert [v.name for v in result.regressions] == ["bench/test_x_bench.py::a"]
    assert result.regressions[0].slowdown == pytest.approx(1.3)


def test_the_same_run_reference_absorbs_a_slower_machine_day() -> None:
    # Everything twice as slow today, the reference too: the ratio holds, no regression.
    baseline = _run(_bench("a", 1.0, reference_s=0.5))
    assert not compare.compare(_run(_bench("a", 2.0, reference_s=1.0)), baseline).regressions
    # The benchmark twice as slow while its reference is not: a regression, relative to the reference.
    result = compare.compare(_run(_bench("a", 2.0, reference_s=0.5)), baseline)
    assert result.regressions and result.regressions[0].relative_to_reference


def test_new_benchmarks_are_listed_and_merged_without_moving_kept_ones() -> None:
    baseline = _run(_bench("a", 1.0))
    run = _run(_bench("a", 0.5), _bench("b", 1.0))
    result = compare.compare(run, baseline)
    assert result.new == ["bench/test_x_bench.py::b"]
    merged = compare.merge_baseline(baseline, run)
    assert [b["stats"]["median"] for b in merged["benchmarks"]] == [1.0, 1.0]


def test_machine_key_separates_machines_and_is_a_file_name() -> None:
    other = {**MACHINE, "cpu": {"brand_raw": "Intel Xeon", "count": 8}}
    assert compare.machine_key(MACHINE) != compare.machine_key(other)
    assert compare.machine_key(MACHINE) == compare.machine_key(json.loads(json.dumps(MACHINE)))
    assert "/" not in compare.machine_key({**MACHINE, "node": "a/b c"})


def test_first_run_saves_then_compares_then_fails_on_a_slowed_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(_bench("a", 1.0, reference_s=0.5), _bench("b", 1.0))
    assert check_regressions(run, tmp_path, 0.25, save=False) == []
    assert "first run on this machine" in capsys.readouterr().out
    assert len(list(tmp_path.glob("*.json"))) == 1

    assert check_regressions(run, tmp_path, 0.25, save=False) == []
    slowed = _run(_bench("a", 1.5, reference_s=0.5), _bench("b", 1.0))
    assert check_regressions(slowed, tmp_path, 0.25, save=False) == ["bench/test_x_bench.py::a"]
    assert "REGRESSION" in capsys.readouterr().out


def test_another_machine_is_never_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_regressions(_run(_bench("a", 1.0)), tmp_path, 0.25, save=False)
    elsewhere = _run(_bench("a", 100.0), machine={**MACHINE, "node": "other-box"})
    assert check_regressions(elsewhere, tmp_path, 0.25, save=False) == []
    assert "first run on this machine" in capsys.readouterr().out.splitlines()[-1]
    assert len(list(tmp_path.glob("*.json"))) == 2
